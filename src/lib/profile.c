/* Startup profiles: recording reads, merging them into regions, the JSON
 * file and its checks (clip/profile.h).
 *
 * The recorder appends every read to an array under a mutex: a read costs a
 * few stores, and FUSE reads are far slower than that. When the array is
 * full it is merged in place (sorted by layer and offset, neighbours closer
 * than the merge gap joined, each keeping its earliest access), so memory
 * stays bounded by the number of distinct regions, not of reads.
 */
#include "clip/profile.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "sha256.h"
#include "util.h"

#define RECORDER_CAP (1u << 18) /* reads kept before a merge: 6 MiB */

void clip_profile_free(struct clip_profile *p)
{
	if (p == NULL)
		return;
	for (uint32_t i = 0; i < p->nlayers; i++)
		free(p->layers[i]);
	free(p->layers);
	free(p->regions);
	free(p);
}

/* ---- regions ---- */

static int by_place(const void *a, const void *b)
{
	const struct clip_profile_region *x = a, *y = b;
	if (x->layer != y->layer)
		return x->layer < y->layer ? -1 : 1;
	if (x->offset != y->offset)
		return x->offset < y->offset ? -1 : 1;
	return 0;
}

static int by_first_access(const void *a, const void *b)
{
	const struct clip_profile_region *x = a, *y = b;
	if (x->first_ms != y->first_ms)
		return x->first_ms < y->first_ms ? -1 : 1;
	return by_place(a, b);
}

/* Sort r[0..n) by place and join neighbours of a layer closer than the
 * merge gap; the new count. */
static size_t merge_regions(struct clip_profile_region *r, size_t n)
{
	if (n == 0)
		return 0;
	qsort(r, n, sizeof(*r), by_place);
	size_t out = 0;
	for (size_t i = 1; i < n; i++) {
		struct clip_profile_region *last = &r[out];
		uint64_t end = last->offset + last->length;
		if (r[i].layer == last->layer && r[i].offset <= end + CLIP_PROFILE_MERGE_GAP) {
			uint64_t e = r[i].offset + r[i].length;
			if (e > end)
				last->length = e - last->offset;
			if (r[i].first_ms < last->first_ms)
				last->first_ms = r[i].first_ms;
		} else {
			r[++out] = r[i];
		}
	}
	return out + 1;
}

void clip_profile_totals(const struct clip_profile *p, uint32_t layer, uint64_t *bytes,
			 size_t *regions)
{
	*bytes = 0;
	*regions = 0;
	for (size_t i = 0; i < p->nregions; i++) {
		if (layer != UINT32_MAX && p->regions[i].layer != layer)
			continue;
		*bytes += p->regions[i].length;
		(*regions)++;
	}
}

static uint32_t layer_count(const struct clip_archive *archive)
{
	struct clip_archive_stats st;
	clip_archive_stats(archive, &st);
	return st.layers;
}

/* ---- the file ---- */

/* The profile as JSON, without its checksum. */
static json_t *profile_json(const struct clip_profile *p)
{
	json_t *root = json_object(), *layers = json_array(), *regions = json_array();
	bool ok = root && layers && regions;
	for (uint32_t i = 0; ok && i < p->nlayers; i++)
		ok = json_array_append_new(layers, json_string(p->layers[i])) == 0;
	for (size_t i = 0; ok && i < p->nregions; i++) {
		const struct clip_profile_region *r = &p->regions[i];
		json_t *a = json_pack("[I,I,I,I]", (json_int_t)r->layer, (json_int_t)r->offset,
				      (json_int_t)r->length, (json_int_t)r->first_ms);
		ok = a && json_array_append_new(regions, a) == 0;
	}
	ok = ok &&
	     json_object_set_new(root, "clip_profile", json_integer(CLIP_PROFILE_VERSION)) == 0;
	ok = ok && json_object_set(root, "layers", layers) == 0 &&
	     json_object_set(root, "regions", regions) == 0;
	json_decref(layers);
	json_decref(regions);
	if (!ok) {
		json_decref(root);
		return NULL;
	}
	return root;
}

/* The checksum of `root` (its "sha256" member left out): hex into out. */
static int checksum(json_t *root, char out[65])
{
	json_t *copy = json_copy(root);
	if (copy == NULL)
		return -ENOMEM;
	json_object_del(copy, "sha256");
	char *text = json_dumps(copy, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(copy);
	if (text == NULL)
		return -ENOMEM;
	unsigned char md[32];
	clip_sha256_once(text, strlen(text), md);
	free(text);
	for (int i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
	return 0;
}

int clip_profile_encode(const struct clip_profile *p, char **text, struct clip_err *err)
{
	json_t *root = profile_json(p);
	char sum[65];
	if (root == NULL || checksum(root, sum) < 0 ||
	    json_object_set_new(root, "sha256", json_string(sum)) < 0) {
		json_decref(root);
		return clip_err_nomem(err);
	}
	*text = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(root);
	return *text ? 0 : clip_err_nomem(err);
}

int clip_profile_save(const struct clip_profile *p, const char *path, struct clip_err *err)
{
	char *text = NULL;
	int rc = clip_profile_encode(p, &text, err);
	if (rc < 0)
		return rc;
	size_t len = strlen(text);
	text[len] = '\n'; /* json_dumps leaves room for its NUL: one line */
	rc = clip_write_file_atomic(path, text, len + 1, err);
	free(text);
	if (rc < 0)
		clip_err_prefix(err, "profile");
	return rc;
}

static bool is_digest(const char *s)
{
	if (strncmp(s, "sha256:", 7) != 0 || strlen(s) != 71)
		return false;
	for (s += 7; *s; s++)
		if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
			return false;
	return true;
}

/* The regions of `a` into p (checked: known layers, no overflow). */
static int load_regions(json_t *a, struct clip_profile *p, const char *path, struct clip_err *err)
{
	p->regions = calloc(json_array_size(a) ? json_array_size(a) : 1, sizeof(*p->regions));
	if (p->regions == NULL)
		return clip_err_nomem(err);
	size_t i;
	json_t *v;
	json_array_foreach (a, i, v) {
		json_int_t layer, off, len, ms;
		if (json_unpack(v, "[IIII!]", &layer, &off, &len, &ms) < 0)
			return clip_err_set(err, EINVAL,
					    "profile %s: region %zu is not [layer, offset, "
					    "length, ms]",
					    path, i);
		if (layer < 0 || layer >= (json_int_t)p->nlayers || off < 0 || len <= 0 ||
		    off > INT64_MAX - len || ms < 0 || ms > UINT32_MAX)
			return clip_err_set(err, EINVAL, "profile %s: region %zu is out of bounds",
					    path, i);
		p->regions[i] = (struct clip_profile_region){ (uint32_t)layer, (uint32_t)ms,
							      (uint64_t)off, (uint64_t)len };
	}
	p->nregions = json_array_size(a);
	return 0;
}

static int load_json(json_t *root, struct clip_profile *p, const char *path, struct clip_err *err)
{
	json_int_t version = 0;
	json_t *layers = NULL, *regions = NULL;
	const char *sum = NULL;
	if (json_unpack(root, "{s:I,s:o,s:o,s:s}", "clip_profile", &version, "layers", &layers,
			"regions", &regions, "sha256", &sum) < 0 ||
	    !json_is_array(layers) || !json_is_array(regions))
		return clip_err_set(err, EINVAL, "profile %s: not a clip profile", path);
	if (version != CLIP_PROFILE_VERSION)
		return clip_err_set(err, EINVAL,
				    "profile %s: version %" JSON_INTEGER_FORMAT
				    " (this clip reads version %d)",
				    path, version, CLIP_PROFILE_VERSION);
	char want[65];
	if (checksum(root, want) < 0)
		return clip_err_nomem(err);
	if (strcmp(want, sum) != 0)
		return clip_err_set(err, EINVAL,
				    "profile %s: checksum mismatch (damaged or edited)", path);
	size_t n = json_array_size(layers);
	if (n == 0 || n > UINT32_MAX)
		return clip_err_set(err, EINVAL, "profile %s: no layers", path);
	if ((p->layers = calloc(n, sizeof(*p->layers))) == NULL)
		return clip_err_nomem(err);
	for (size_t i = 0; i < n; i++) {
		const char *d = json_string_value(json_array_get(layers, i));
		if (d == NULL || !is_digest(d))
			return clip_err_set(err, EINVAL, "profile %s: layer %zu is not a digest",
					    path, i);
		if ((p->layers[i] = strdup(d)) == NULL)
			return clip_err_nomem(err);
		p->nlayers = (uint32_t)(i + 1);
	}
	return load_regions(regions, p, path, err);
}

/* A profile from parsed JSON (`root` released here), named `name`. */
static int from_root(json_t *root, const char *name, struct clip_profile **out,
		     struct clip_err *err)
{
	struct clip_profile *p = calloc(1, sizeof(*p));
	int rc = p ? load_json(root, p, name, err) : clip_err_nomem(err);
	json_decref(root);
	if (rc < 0) {
		clip_profile_free(p);
		return rc;
	}
	*out = p;
	return 0;
}

int clip_profile_load(const char *path, struct clip_profile **out, struct clip_err *err)
{
	json_error_t jerr;
	json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
	if (root == NULL) {
		FILE *f = fopen(path, "r");
		if (f == NULL)
			return clip_err_errno(err, errno, "profile %s", path);
		fclose(f);
		return clip_err_set(err, EINVAL, "profile %s: not JSON: %s (line %d)", path,
				    jerr.text, jerr.line);
	}
	return from_root(root, path, out, err);
}

int clip_profile_decode(const char *text, size_t len, const char *name, struct clip_profile **out,
			struct clip_err *err)
{
	json_error_t jerr;
	json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	if (root == NULL)
		return clip_err_set(err, EINVAL, "profile %s: not JSON: %s", name, jerr.text);
	return from_root(root, name, out, err);
}

/* The index of digest `d` in p's layers, added when missing; UINT32_MAX when
 * out of memory. */
static uint32_t layer_slot(struct clip_profile *p, const char *d)
{
	for (uint32_t i = 0; i < p->nlayers; i++)
		if (strcmp(p->layers[i], d) == 0)
			return i;
	char **grown = realloc(p->layers, (p->nlayers + 1) * sizeof(*grown));
	if (grown == NULL)
		return UINT32_MAX;
	p->layers = grown;
	if ((grown[p->nlayers] = strdup(d)) == NULL)
		return UINT32_MAX;
	return p->nlayers++;
}

int clip_profile_merge(const struct clip_profile *const *profiles, size_t n,
		       struct clip_profile **out, struct clip_err *err)
{
	struct clip_profile *m = calloc(1, sizeof(*m));
	size_t total = 0;
	for (size_t i = 0; i < n; i++)
		total += profiles[i]->nregions;
	if (m == NULL || (m->regions = calloc(total ? total : 1, sizeof(*m->regions))) == NULL) {
		clip_profile_free(m);
		return clip_err_nomem(err);
	}
	for (size_t i = 0; i < n; i++) {
		const struct clip_profile *p = profiles[i];
		for (size_t k = 0; k < p->nregions; k++) {
			struct clip_profile_region r = p->regions[k];
			r.layer = layer_slot(m, p->layers[r.layer]);
			if (r.layer == UINT32_MAX) {
				clip_profile_free(m);
				return clip_err_nomem(err);
			}
			m->regions[m->nregions++] = r;
		}
	}
	/* Overlapping regions keep the earliest first access of any run. */
	m->nregions = merge_regions(m->regions, m->nregions);
	qsort(m->regions, m->nregions, sizeof(*m->regions), by_first_access);
	*out = m;
	return 0;
}

int clip_profile_match(const struct clip_profile *p, const struct clip_archive *archive,
		       uint32_t *map, struct clip_err *err)
{
	uint32_t n = layer_count(archive);
	for (uint32_t i = 0; i < p->nlayers; i++) {
		map[i] = UINT32_MAX;
		for (uint32_t j = 0; j < n && map[i] == UINT32_MAX; j++) {
			struct clip_archive_layer al;
			if (clip_archive_layer(archive, j, &al) == 0 &&
			    strcmp(al.digest, p->layers[i]) == 0)
				map[i] = j;
		}
		if (map[i] == UINT32_MAX)
			return clip_err_set(err, EINVAL,
					    "profile: layer %s is not in this archive (a profile "
					    "of another image?)",
					    p->layers[i]);
	}
	for (size_t i = 0; i < p->nregions; i++) {
		const struct clip_profile_region *r = &p->regions[i];
		struct clip_archive_layer al;
		if (clip_archive_layer(archive, map[r->layer], &al) < 0 ||
		    r->offset + r->length > al.uncompressed_size)
			return clip_err_set(err, EINVAL,
					    "profile: region %zu (%" PRIu64 "+%" PRIu64
					    ") ends past layer %s",
					    i, r->offset, r->length, p->layers[r->layer]);
	}
	return 0;
}

/* ---- recording ---- */

struct clip_profile_recorder {
	pthread_mutex_t lock;
	char **layers; /* the archive's digests */
	uint32_t nlayers;
	uint32_t seconds;
	bool started;
	struct timespec start;
	struct clip_profile_region *reads;
	size_t n;
};

void clip_profile_recorder_free(struct clip_profile_recorder *r)
{
	if (r == NULL)
		return;
	for (uint32_t i = 0; i < r->nlayers; i++)
		free(r->layers[i]);
	free(r->layers);
	free(r->reads);
	pthread_mutex_destroy(&r->lock);
	free(r);
}

int clip_profile_recorder_new(const struct clip_archive *archive, uint32_t seconds,
			      struct clip_profile_recorder **out, struct clip_err *err)
{
	struct clip_profile_recorder *r = calloc(1, sizeof(*r));
	if (r == NULL)
		return clip_err_nomem(err);
	pthread_mutex_init(&r->lock, NULL);
	r->seconds = seconds;
	uint32_t n = layer_count(archive);
	r->reads = malloc(RECORDER_CAP * sizeof(*r->reads));
	r->layers = calloc(n ? n : 1, sizeof(*r->layers));
	bool ok = r->reads && r->layers;
	for (uint32_t i = 0; ok && i < n; i++) {
		struct clip_archive_layer al;
		ok = clip_archive_layer(archive, i, &al) == 0 &&
		     (r->layers[i] = strdup(al.digest)) != NULL;
		r->nlayers = i + 1;
	}
	if (!ok) {
		clip_profile_recorder_free(r);
		return clip_err_nomem(err);
	}
	*out = r;
	return 0;
}

void clip_profile_recorder_add(struct clip_profile_recorder *r, uint32_t layer, uint64_t offset,
			       uint64_t length)
{
	if (length == 0 || layer >= r->nlayers)
		return;
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	pthread_mutex_lock(&r->lock);
	if (!r->started) {
		r->started = true;
		r->start = now;
	}
	int64_t ms = (int64_t)(now.tv_sec - r->start.tv_sec) * 1000 +
		     (now.tv_nsec - r->start.tv_nsec) / 1000000;
	if ((r->seconds == 0 || ms < (int64_t)r->seconds * 1000) && ms <= UINT32_MAX) {
		if (r->n == RECORDER_CAP)
			r->n = merge_regions(r->reads, r->n);
		/* Distinct regions filling the array after a merge would need
		 * 256k holes of 64 KiB: 16 GiB of layers. Past that, the
		 * profile keeps what it has. */
		if (r->n < RECORDER_CAP)
			r->reads[r->n++] =
				(struct clip_profile_region){ layer, (uint32_t)ms, offset, length };
	}
	pthread_mutex_unlock(&r->lock);
}

int clip_profile_recorder_profile(struct clip_profile_recorder *r, struct clip_profile **out,
				  struct clip_err *err)
{
	struct clip_profile *p = calloc(1, sizeof(*p));
	if (p == NULL)
		return clip_err_nomem(err);
	pthread_mutex_lock(&r->lock);
	r->n = merge_regions(r->reads, r->n);
	p->regions = malloc((r->n ? r->n : 1) * sizeof(*p->regions));
	if (p->regions)
		memcpy(p->regions, r->reads, r->n * sizeof(*p->regions));
	p->nregions = r->n;
	pthread_mutex_unlock(&r->lock);
	p->layers = calloc(r->nlayers ? r->nlayers : 1, sizeof(*p->layers));
	bool ok = p->regions && p->layers;
	for (uint32_t i = 0; ok && i < r->nlayers; i++) {
		ok = (p->layers[i] = strdup(r->layers[i])) != NULL;
		p->nlayers = i + 1;
	}
	if (!ok) {
		clip_profile_free(p);
		return clip_err_nomem(err);
	}
	qsort(p->regions, p->nregions, sizeof(*p->regions), by_first_access);
	*out = p;
	return 0;
}
