/* clip optimize: extra checkpoints where a startup profile reads, and the
 * profile embedded (clip/optimize.h).
 *
 * The unit of a cold read is a chunk of the archive's hash grid (1 MiB): a
 * read produces whole chunks, each checked against its hash, by inflating
 * from the checkpoint at or before the first chunk's start through the span
 * that holds the last chunk's end. So the profile's regions become runs of
 * hot chunks, and each chunk edge of a run wants the last block boundary
 * before it (a read of the chunk starts there, not at the span's
 * checkpoint) and the first one after it (a read that ends there stops
 * there, not at the next checkpoint).
 */
#include "clip/optimize.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

/* A want of one span, and what it saves if its checkpoint is added. */
struct want {
	uint32_t layer;
	size_t span;
	struct clip_gz_want w;
};

/* The spans of one layer to inflate: wants[first, first + n). */
struct job {
	uint32_t layer;
	size_t span;
	size_t first, n;
	/* results */
	struct clip_gz_point *points;
	size_t npoints;
	size_t *picked; /* per want */
	struct clip_gz_read_stats stats;
	int rc;
	struct clip_err err;
};

struct layer {
	struct clip_gz_index *gz; /* NULL: not gzip, or no checkpoints */
	struct clip_source_blob blob;
	bool blob_open;
	struct clip_blob_source src;
	uint64_t usize;
	unsigned char *hot; /* per chunk: read by the profile */
	uint64_t nchunks;
};

struct optimizer {
	const struct clip_archive *archive;
	const struct clip_optimize_options *o;
	struct layer *layers;
	uint32_t nlayers;
	uint64_t chunk;
	struct want *wants;
	size_t nwants, wants_cap;
	struct job *jobs;
	size_t njobs;
	atomic_size_t next_job, jobs_done;
	pthread_mutex_t progress_lock;
};

static int want_add(struct optimizer *z, uint32_t layer, size_t span, uint64_t at, bool after)
{
	if (z->nwants == z->wants_cap) {
		size_t cap = z->wants_cap ? 2 * z->wants_cap : 256;
		struct want *w = realloc(z->wants, cap * sizeof(*w));
		if (w == NULL)
			return -ENOMEM;
		z->wants = w;
		z->wants_cap = cap;
	}
	z->wants[z->nwants++] = (struct want){ layer, span, { at, after } };
	return 0;
}

static int by_span(const void *a, const void *b)
{
	const struct want *x = a, *y = b;
	if (x->layer != y->layer)
		return x->layer < y->layer ? -1 : 1;
	if (x->span != y->span)
		return x->span < y->span ? -1 : 1;
	if (x->w.at != y->w.at)
		return x->w.at < y->w.at ? -1 : 1;
	return (int)x->w.after - (int)y->w.after;
}

static uint64_t span_out_end(const struct clip_gz_index *gz, size_t i)
{
	return i + 1 < gz->count ? gz->points[i + 1].out : gz->usize;
}

/* Runs of hot chunks [a, b) of layer l, each passed to fn. */
static int for_each_run(const struct layer *l, uint64_t chunk,
			int (*fn)(void *opaque, uint64_t a, uint64_t b), void *opaque)
{
	for (uint64_t k = 0; k < l->nchunks;) {
		if (!l->hot[k]) {
			k++;
			continue;
		}
		uint64_t k1 = k;
		while (k1 + 1 < l->nchunks && l->hot[k1 + 1])
			k1++;
		uint64_t b = (k1 + 1) * chunk < l->usize ? (k1 + 1) * chunk : l->usize;
		int rc = fn(opaque, k * chunk, b);
		if (rc < 0)
			return rc;
		k = k1 + 1;
	}
	return 0;
}

struct run_ctx {
	struct optimizer *z;
	uint32_t layer;
	const struct clip_gz_index *gz; /* for the estimate */
	uint64_t bytes;
	size_t runs;
	unsigned char *seen; /* per span of gz */
};

/* The wants of a run of hot chunks: at each chunk edge in it or around it,
 * the last boundary before the edge and the first after it, unless a
 * checkpoint is close enough already. A read of chunks [k, m] then fetches
 * from the boundary before k's start to the one after m's end, and a read of
 * the chunk that follows shares only the one deflate block around the edge
 * with it, where a chunk straddling two long spans made both reads fetch all
 * of the second. */
static int run_wants(void *opaque, uint64_t a, uint64_t b)
{
	struct run_ctx *r = opaque;
	const struct clip_gz_index *gz = r->z->layers[r->layer].gz;
	r->runs++;
	for (uint64_t edge = a;; edge += r->z->chunk) {
		if (edge > b)
			edge = b;
		ssize_t i = clip_gz_index_find(gz, edge);
		if (i < 0 || edge >= gz->usize)
			break;
		if (edge < b && edge - gz->points[i].out >= 2 * CLIP_GZ_WINDOW &&
		    want_add(r->z, r->layer, (size_t)i, edge, false) < 0)
			return -ENOMEM;
		if (edge > a && span_out_end(gz, (size_t)i) - edge >= 2 * CLIP_GZ_WINDOW &&
		    want_add(r->z, r->layer, (size_t)i, edge, true) < 0)
			return -ENOMEM;
		if (edge == b)
			break;
	}
	return 0;
}

/* Mark in `seen` (one per span) the spans the chunks of run [a, b) need with
 * index r->gz, and count their compressed bytes once. */
static int run_bytes(void *opaque, uint64_t a, uint64_t b)
{
	struct run_ctx *r = opaque;
	ssize_t i = clip_gz_index_find(r->gz, a), j = clip_gz_index_find(r->gz, b - 1);
	for (ssize_t s = i < 0 ? 0 : i; j >= 0 && s <= j; s++) {
		if (r->seen[s])
			continue;
		r->seen[s] = 1;
		r->bytes +=
			clip_gz_span_end(r->gz, (size_t)s) - clip_gz_span_start(r->gz, (size_t)s);
	}
	return 0;
}

static void *worker(void *opaque)
{
	struct optimizer *z = opaque;
	for (;;) {
		size_t k = atomic_fetch_add(&z->next_job, 1);
		if (k >= z->njobs)
			return NULL;
		struct job *j = &z->jobs[k];
		struct layer *l = &z->layers[j->layer];
		struct clip_gz_want *w = malloc(j->n * sizeof(*w));
		j->picked = malloc(j->n * sizeof(*j->picked));
		if (w == NULL || j->picked == NULL) {
			free(w);
			j->rc = clip_err_nomem(&j->err);
			continue;
		}
		for (size_t i = 0; i < j->n; i++)
			w[i] = z->wants[j->first + i].w;
		j->rc = clip_gz_index_refine(l->gz, &l->src, j->span, w, j->n, &j->points,
					     &j->npoints, j->picked, &j->stats, &j->err);
		free(w);
		size_t done = atomic_fetch_add(&z->jobs_done, 1) + 1;
		if (z->o->progress) {
			pthread_mutex_lock(&z->progress_lock);
			z->o->progress(z->o->opaque, done, z->njobs);
			pthread_mutex_unlock(&z->progress_lock);
		}
	}
}

/* A found boundary, what adding it saves and costs. */
struct candidate {
	uint32_t layer;
	const struct clip_gz_point *p;
	uint64_t gain, cost;
};

static int by_worth(const void *a, const void *b)
{
	const struct candidate *x = a, *y = b;
	/* gain/cost, compared without division */
	unsigned __int128 l = (unsigned __int128)x->gain * y->cost;
	unsigned __int128 r = (unsigned __int128)y->gain * x->cost;
	if (l != r)
		return l > r ? -1 : 1;
	if (x->layer != y->layer)
		return x->layer < y->layer ? -1 : 1;
	return x->p->out < y->p->out ? -1 : x->p->out > y->p->out;
}

static int by_out(const void *a, const void *b)
{
	const struct clip_gz_point *x = a, *y = b;
	return x->out < y->out ? -1 : x->out > y->out;
}

/* Load the layers, mark hot chunks, and list the wants, grouped by span. */
static int plan(struct optimizer *z, struct clip_optimize_report *rep, struct clip_err *err)
{
	const struct clip_profile *p = z->o->profile;
	uint32_t *map = calloc(p->nlayers ? p->nlayers : 1, sizeof(*map));
	if (map == NULL)
		return clip_err_nomem(err);
	int rc = clip_profile_match(p, z->archive, map, err);
	for (uint32_t i = 0; rc == 0 && i < z->nlayers; i++) {
		struct layer *l = &z->layers[i];
		struct clip_archive_layer al;
		rc = clip_archive_layer(z->archive, i, &al);
		if (rc < 0) {
			clip_err_set(err, -rc, "layer %u is invalid", i);
			break;
		}
		l->usize = al.uncompressed_size;
		rep->image_bytes += al.compressed_size;
		if (al.ncheckpoints == 0)
			continue;
		rc = clip_archive_layer_gzindex(z->archive, i, &l->gz, err);
		l->nchunks = (l->usize + z->chunk - 1) / z->chunk;
		if (rc == 0 && (l->hot = calloc(l->nchunks ? l->nchunks : 1, 1)) == NULL)
			rc = clip_err_nomem(err);
		if (rc == 0 &&
		    (rc = clip_source_blob_open(z->o->source, al.digest, al.compressed_size,
						&l->blob, err)) == 0) {
			l->blob_open = true;
			l->src = clip_source_blob_reader(&l->blob);
		}
	}
	for (size_t r = 0; rc == 0 && r < p->nregions; r++) {
		const struct clip_profile_region *reg = &p->regions[r];
		struct layer *l = &z->layers[map[reg->layer]];
		if (l->hot == NULL || reg->length == 0)
			continue;
		for (uint64_t k = reg->offset / z->chunk;
		     k <= (reg->offset + reg->length - 1) / z->chunk && k < l->nchunks; k++)
			l->hot[k] = 1;
	}
	free(map);
	for (uint32_t i = 0; rc == 0 && i < z->nlayers; i++) {
		if (z->layers[i].hot == NULL)
			continue;
		struct run_ctx r = {
			z, i, z->layers[i].gz, 0, 0, calloc(z->layers[i].gz->count, 1)
		};
		rc = r.seen ? for_each_run(&z->layers[i], z->chunk, run_wants, &r) : -ENOMEM;
		rc = rc < 0 ? clip_err_nomem(err) : 0;
		if (rc == 0)
			for_each_run(&z->layers[i], z->chunk, run_bytes, &r);
		free(r.seen);
		rep->runs += r.runs;
		rep->hot_before += r.bytes;
	}
	if (rc < 0)
		return rc;
	qsort(z->wants, z->nwants, sizeof(*z->wants), by_span);
	for (size_t w = 0; w < z->nwants; w++)
		if (w == 0 || z->wants[w].layer != z->wants[w - 1].layer ||
		    z->wants[w].span != z->wants[w - 1].span)
			z->njobs++;
	z->jobs = calloc(z->njobs ? z->njobs : 1, sizeof(*z->jobs));
	if (z->jobs == NULL)
		return clip_err_nomem(err);
	size_t k = 0;
	for (size_t w = 0; w < z->nwants; w++) {
		if (w > 0 && z->wants[w].layer == z->wants[w - 1].layer &&
		    z->wants[w].span == z->wants[w - 1].span) {
			z->jobs[k - 1].n++;
			continue;
		}
		z->jobs[k++] = (struct job){
			.layer = z->wants[w].layer, .span = z->wants[w].span, .first = w, .n = 1
		};
	}
	return 0;
}

/* Run the jobs on `threads` threads; the first failure in job order. */
static int run_jobs(struct optimizer *z, unsigned threads, struct clip_err *err)
{
	if (threads == 0) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		threads = n > 0 ? (unsigned)n : 1;
	}
	if (threads > z->njobs)
		threads = z->njobs ? (unsigned)z->njobs : 1;
	pthread_t *t = calloc(threads, sizeof(*t));
	if (t == NULL)
		return clip_err_nomem(err);
	unsigned started = 0;
	for (; started + 1 < threads; started++)
		if (pthread_create(&t[started], NULL, worker, z) != 0)
			break;
	worker(z);
	for (unsigned i = 0; i < started; i++)
		pthread_join(t[i], NULL);
	free(t);
	for (size_t k = 0; k < z->njobs; k++)
		if (z->jobs[k].rc < 0) {
			*err = z->jobs[k].err;
			return clip_err_prefix(err, "layer %u", z->jobs[k].layer);
		}
	return 0;
}

/* Every found boundary with what it saves: for a want before a run, the
 * span's bytes before it; for one after, the span's bytes after it. */
static int candidates(struct optimizer *z, struct candidate **out, size_t *n, struct clip_err *err)
{
	size_t total = 0;
	for (size_t k = 0; k < z->njobs; k++)
		total += z->jobs[k].npoints;
	struct candidate *c = calloc(total ? total : 1, sizeof(*c));
	if (c == NULL)
		return clip_err_nomem(err);
	size_t m = 0;
	for (size_t k = 0; k < z->njobs; k++) {
		struct job *j = &z->jobs[k];
		const struct clip_gz_index *gz = z->layers[j->layer].gz;
		uint64_t s0 = clip_gz_span_start(gz, j->span), s1 = clip_gz_span_end(gz, j->span);
		for (size_t p = 0; p < j->npoints; p++)
			c[m + p] = (struct candidate){ j->layer, &j->points[p], 0,
						       72 + j->points[p].window_zlen };
		for (size_t w = 0; w < j->n; w++) {
			if (j->picked[w] == SIZE_MAX)
				continue;
			struct candidate *cand = &c[m + j->picked[w]];
			bool after = z->wants[j->first + w].w.after;
			cand->gain += after ? s1 - cand->p->in : cand->p->in - s0;
		}
		m += j->npoints;
	}
	*out = c;
	*n = m;
	return 0;
}

/* The new index of each layer: its checkpoints and the chosen ones. */
static int new_indexes(struct optimizer *z, const struct candidate *c, size_t n,
		       struct clip_gz_index **gz, struct clip_err *err)
{
	for (uint32_t i = 0; i < z->nlayers; i++) {
		const struct clip_gz_index *old = z->layers[i].gz;
		size_t add = 0;
		for (size_t k = 0; k < n; k++)
			add += c[k].layer == i;
		if (old == NULL || add == 0)
			continue;
		struct clip_gz_index *g = calloc(1, sizeof(*g));
		if (g == NULL)
			return clip_err_nomem(err);
		*g = *old;
		g->owned_storage = NULL;
		g->owned_pieces = NULL;
		g->owns_points = true;
		g->points = malloc((old->count + add) * sizeof(*g->points));
		if (g->points == NULL) {
			free(g);
			return clip_err_nomem(err);
		}
		memcpy(g->points, old->points, old->count * sizeof(*g->points));
		g->count = old->count;
		for (size_t k = 0; k < n; k++)
			if (c[k].layer == i)
				g->points[g->count++] = *c[k].p;
		qsort(g->points, g->count, sizeof(*g->points), by_out);
		gz[i] = g;
	}
	return 0;
}

static int embedded_text(const struct clip_profile *p, size_t added, char **out,
			 struct clip_err *err)
{
	char *profile = NULL;
	int rc = clip_profile_encode(p, &profile, err);
	if (rc < 0)
		return rc;
	if (asprintf(out, "{\"checkpoints_added\":%zu,\"profile\":%s}", added, profile) < 0)
		rc = clip_err_nomem(err);
	free(profile);
	return rc;
}

static void optimizer_free(struct optimizer *z)
{
	for (uint32_t i = 0; z->layers && i < z->nlayers; i++) {
		clip_gz_index_free(z->layers[i].gz);
		if (z->layers[i].blob_open)
			clip_source_blob_close(&z->layers[i].blob);
		free(z->layers[i].hot);
	}
	free(z->layers);
	for (size_t k = 0; z->jobs && k < z->njobs; k++) {
		clip_gz_points_free(z->jobs[k].points, z->jobs[k].npoints);
		free(z->jobs[k].picked);
	}
	free(z->jobs);
	free(z->wants);
	pthread_mutex_destroy(&z->progress_lock);
}

int clip_optimize(const char *path, const struct clip_archive *archive,
		  const struct clip_optimize_options *o, struct clip_optimize_report *report,
		  struct clip_err *err)
{
	struct clip_optimize_report rep = { 0 };
	struct clip_archive_stats st;
	clip_archive_stats(archive, &st);
	rep.size_before = st.file_size;
	if (st.piece_bytes == 0 || st.chunk_bytes == 0)
		return clip_err_set(err, ENOTSUP,
				    "%s: an archive of format %u has no piece digests: index the "
				    "image again",
				    clip_archive_path(archive), st.version);
	struct optimizer z = { .archive = archive, .o = o, .nlayers = st.layers };
	z.chunk = st.chunk_bytes;
	pthread_mutex_init(&z.progress_lock, NULL);
	z.layers = calloc(st.layers ? st.layers : 1, sizeof(*z.layers));
	struct clip_gz_index **gz = calloc(st.layers ? st.layers : 1, sizeof(*gz));
	struct candidate *cand = NULL;
	size_t ncand = 0;
	char *text = NULL;
	int rc = z.layers && gz ? plan(&z, &rep, err) : clip_err_nomem(err);
	if (rc == 0)
		rc = run_jobs(&z, o->threads, err);
	if (rc == 0)
		rc = candidates(&z, &cand, &ncand, err);
	if (rc == 0) {
		/* The most bytes saved per byte of archive first, within the
		 * bound; the order of the rest is fixed, so the result is too. */
		qsort(cand, ncand, sizeof(*cand), by_worth);
		uint64_t min_gain = o->min_gain ? o->min_gain : CLIP_OPTIMIZE_DEFAULT_MIN_GAIN;
		uint64_t grown = 0;
		size_t keep = 0;
		for (size_t k = 0; k < ncand; k++) {
			if (cand[k].gain < min_gain ||
			    (o->max_growth && grown + cand[k].cost > o->max_growth))
				continue;
			grown += cand[k].cost;
			rep.window_bytes += cand[k].p->window_zlen;
			cand[keep++] = cand[k];
		}
		rep.found = ncand;
		rep.added = keep;
		ncand = keep;
		rc = new_indexes(&z, cand, ncand, gz, err);
	}
	for (size_t k = 0; rc == 0 && k < z.njobs; k++) {
		rep.spans += z.jobs[k].stats.spans;
		rep.fetched += z.jobs[k].stats.compressed_bytes;
	}
	for (uint32_t i = 0; rc == 0 && i < z.nlayers; i++) {
		const struct clip_gz_index *g = gz[i] ? gz[i] : z.layers[i].gz;
		rep.checkpoints += g ? g->count : 0;
		if (z.layers[i].hot == NULL)
			continue;
		struct run_ctx r = { &z, i, g, 0, 0, calloc(g->count, 1) };
		if (r.seen == NULL) {
			rc = clip_err_nomem(err);
			break;
		}
		for_each_run(&z.layers[i], z.chunk, run_bytes, &r);
		free(r.seen);
		rep.hot_after += r.bytes;
	}
	if (rc == 0)
		rc = embedded_text(o->profile, rep.added, &text, err);
	if (rc == 0) {
		struct clip_archive_rewrite_options ro = {
			.gz = (const struct clip_gz_index *const *)gz, .profile_json = text
		};
		rc = clip_archive_rewrite(path, archive, &ro, err);
	}
	struct stat sb;
	if (rc == 0 && stat(path, &sb) == 0)
		rep.size_after = (uint64_t)sb.st_size;
	free(text);
	free(cand);
	for (uint32_t i = 0; gz && i < z.nlayers; i++)
		clip_gz_index_free(gz[i]);
	free(gz);
	optimizer_free(&z);
	if (report)
		*report = rep;
	return rc;
}

int clip_optimize_embedded(const struct clip_archive *archive, struct clip_profile **out,
			   size_t *added, struct clip_err *err)
{
	*out = NULL;
	const char *text = clip_archive_profile_json(archive);
	if (text == NULL)
		return 0;
	json_error_t jerr;
	json_t *root = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
	json_int_t n = 0;
	json_t *profile = NULL;
	char *inner = NULL;
	int rc = 0;
	if (root == NULL ||
	    json_unpack(root, "{s:I,s:o}", "checkpoints_added", &n, "profile", &profile) < 0 ||
	    n < 0 || (inner = json_dumps(profile, JSON_COMPACT | JSON_SORT_KEYS)) == NULL)
		rc = clip_err_set(err, EINVAL, "%s: the embedded profile is damaged",
				  clip_archive_path(archive));
	if (rc == 0)
		rc = clip_profile_decode(inner, strlen(inner), "embedded in the archive", out, err);
	free(inner);
	json_decref(root);
	if (rc < 0)
		return rc;
	if (added)
		*added = (size_t)n;
	return 1;
}
