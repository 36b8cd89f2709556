/* clip stats --prometheus: a mount's counters in the Prometheus text
 * exposition format (version 0.0.4), for node_exporter's textfile collector
 * or any scraper that reads a file.
 *
 * The text is made from the same JSON `clip stats --json` prints (the
 * user.clip.stats attribute of the mount's root, clip_content_stats_json), so
 * the daemon needs no second protocol: one table below maps its fields to
 * metric families. Names follow Prometheus's conventions: a clip_ prefix,
 * base units in the name (_bytes, _seconds), _total on counters; every
 * sample carries the mount point as a label, so that several mounts can share
 * one file or scrape. A field the mount does not report (the remote cache's
 * without --remote-cache) leaves its family out rather than reporting 0.
 */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

/* How a family's samples are found in the JSON. */
enum shape {
	ROOT,	   /* one sample: root[object][field], or root[field] */
	PER_TIER,  /* one per read tier: root.tiers.<tier>[field], label tier */
	PER_KEY,   /* one per key of root[object], label `label` */
	PER_LAYER, /* one per element of root.layers: [field], label layer (its digest) */
};

struct family {
	const char *name, *type, *help;
	enum shape shape;
	const char *object; /* ROOT, PER_KEY: the object holding the field(s); NULL: root */
	const char *field;
	double scale;	     /* 0: the value as it is; else multiplied (ms to seconds) */
	const char *label;   /* PER_KEY: the label naming the key */
	bool layer_fallback; /* PER_LAYER: add the layer's fallback as label reason */
};

/* A family of one sample, root[object][field] (object NULL: root[field]). */
#define C(n, object_, field_, help_)                                                               \
	{                                                                                          \
		.name = n, .type = "counter", .shape = ROOT, .object = object_, .field = field_,   \
		.help = help_                                                                      \
	}
#define G(n, object_, field_, help_)                                                               \
	{                                                                                          \
		.name = n, .type = "gauge", .shape = ROOT, .object = object_, .field = field_,     \
		.help = help_                                                                      \
	}
/* One sample per read tier, its value times scale_ (0: as it is). */
#define TIER(n, field_, scale_, help_)                                                             \
	{                                                                                          \
		.name = n, .type = "counter", .shape = PER_TIER, .field = field_, .scale = scale_, \
		.help = help_                                                                      \
	}
/* One sample per layer; with_reason_: labelled with its fallback too. */
#define LAYER_C(n, field_, with_reason_, help_)                                                    \
	{                                                                                          \
		.name = n, .type = "counter", .shape = PER_LAYER, .field = field_,                 \
		.layer_fallback = with_reason_, .help = help_                                      \
	}
#define LAYER_G(n, field_, with_reason_, help_)                                                    \
	{                                                                                          \
		.name = n, .type = "gauge", .shape = PER_LAYER, .field = field_,                   \
		.layer_fallback = with_reason_, .help = help_                                      \
	}

static const struct family families[] = {
	C("clip_reads_total", NULL, "reads", "Reads of file contents the mount answered."),
	C("clip_read_bytes_total", NULL, "read_bytes",
	  "Bytes of file contents the mount returned."),
	C("clip_coalesced_fetches_total", NULL, "coalesced",
	  "Chunk fetches that waited for another read's fetch of the same chunk."),
	TIER("clip_tier_hits_total", "hits", 0,
	     "Requests a read tier answered (disk cache, memory cache, remote cache, checkpoint "
	     "spans from the source, whole layers from the source)."),
	TIER("clip_tier_misses_total", "misses", 0, "Requests a read tier could not answer."),
	TIER("clip_tier_errors_total", "errors", 0,
	     "Requests of a read tier that failed, verification failures included."),
	TIER("clip_tier_bytes_total", "bytes", 0, "Bytes a read tier produced."),
	TIER("clip_tier_seconds_total", "ms", 1e-3, "Time spent in a read tier."),
	/* One sample per reason, from the object of counts by reason. */
	{ .name = "clip_whole_layer_fetches_total",
	  .type = "counter",
	  .shape = PER_KEY,
	  .object = "whole_layer_fetches",
	  .label = "reason",
	  .help = "Whole-layer fetches (a layer streamed from its start because it cannot be read "
		  "in ranges), by reason: zstd, no_checkpoints (none in the archive), "
		  "no_checkpoints_option (--no-checkpoints), no_chunk_hashes (plain tar, format "
		  "1)." },
	{ .name = "clip_whole_layer_reads_total",
	  .type = "counter",
	  .shape = PER_KEY,
	  .object = "whole_layer_reads",
	  .label = "reason",
	  .help = "Reads that fell back to a whole-layer fetch (ran one or waited for one; not "
		  "those the caches answered after it), by the reason of "
		  "clip_whole_layer_fetches_total." },
	C("clip_spans_inflated_total", NULL, "spans_inflated", "Checkpoint spans inflated."),
	C("clip_compressed_bytes_total", NULL, "compressed_bytes",
	  "Compressed bytes read of layer blobs, from the source or the piece cache."),
	C("clip_compressed_reused_bytes_total", NULL, "compressed_reused",
	  "Compressed bytes taken from the piece cache, not fetched again."),
	C("clip_inflated_bytes_total", NULL, "inflated_bytes",
	  "Bytes produced by decompression, skipped ones included."),
	C("clip_source_requests_total", NULL, "source_requests",
	  "Requests to the registry (0 for a local OCI layout)."),
	C("clip_source_bytes_total", NULL, "source_bytes",
	  "Bytes fetched from the image source (registry or local layout)."),
	C("clip_remote_verify_failures_total", NULL, "remote_verify_failures",
	  "Chunks from the remote cache that failed their hash."),
	C("clip_hydrate_errors_total", NULL, "hydrate_errors",
	  "Hydrations of a layer the source stopped."),
	G("clip_profile_replay_regions", "replay", "regions",
	  "Regions of the startup profile being replayed."),
	C("clip_profile_replay_regions_done_total", "replay", "done",
	  "Regions of the startup profile fetched or found cached."),
	C("clip_profile_replay_errors_total", "replay", "errors",
	  "Regions of the startup profile the source failed to produce."),
	LAYER_C("clip_layer_reads_total", "reads", false,
		"Reads of file contents answered, per layer."),
	LAYER_C("clip_layer_read_bytes_total", "read_bytes", false,
		"Bytes of file contents returned, per layer."),
	LAYER_C("clip_layer_whole_fetches_total", "whole_layer_fetches", true,
		"Whole-layer fetches of a layer; reason: why it cannot be read in ranges (none: it "
		"can)."),
	LAYER_C("clip_layer_whole_reads_total", "whole_layer_reads", true,
		"Reads of a layer that fell back to a whole-layer fetch; reason: why."),
	LAYER_G("clip_layer_units", "units", false,
		"Checkpoint spans of a layer (plain tar: chunks of the archive's grid); 0: not "
		"counted."),
	LAYER_G("clip_layer_units_touched", "touched", false,
		"Of a layer's units, those programs read."),
	LAYER_G("clip_layer_chunks", "chunks", false, "Disk cache chunks of a layer."),
	LAYER_C("clip_layer_hydrated_chunks_total", "hydrated_chunks", false,
		"Chunks of a layer its hydration fetched."),
	LAYER_G("clip_layer_hydrating", "hydrating", false, "1 once a layer's hydration started."),
	LAYER_G("clip_layer_hydrated", "hydrated", false,
		"1 once a layer's hydration looked at every chunk."),
	G("clip_remote_cache_usable", "remote_cache", "usable",
	  "1 when the remote cache is used (the archive has chunk hashes of this chunk size)."),
	C("clip_remote_cache_hits_total", "remote_cache", "hits",
	  "Remote cache lookups that found the chunk."),
	C("clip_remote_cache_misses_total", "remote_cache", "misses",
	  "Remote cache lookups that did not find the chunk."),
	C("clip_remote_cache_read_bytes_total", "remote_cache", "bytes_read",
	  "Bytes read from the remote cache."),
	C("clip_remote_cache_errors_total", "remote_cache", "errors",
	  "Remote cache operations that failed or timed out."),
	C("clip_remote_cache_stores_total", "remote_cache", "stores",
	  "Chunks written to the remote cache."),
	C("clip_remote_cache_stores_skipped_total", "remote_cache", "stores_skipped",
	  "Chunks not written to the remote cache: already there."),
	C("clip_remote_cache_stores_dropped_total", "remote_cache", "stores_dropped",
	  "Chunks not written to the remote cache: queue full or backend down."),
	C("clip_remote_cache_redirects_total", "remote_cache", "redirects",
	  "Redis Cluster redirections followed."),
	G("clip_disk_cache_usage_bytes", "disk_cache", "usage",
	  "Bytes in the disk cache (shared by the machine's mounts)."),
	C("clip_disk_cache_written_bytes_total", "disk_cache", "bytes_written",
	  "Bytes this mount wrote to the disk cache."),
	C("clip_disk_cache_corrupt_chunks_total", "disk_cache", "corrupt",
	  "Disk cache chunks found torn or corrupted, and removed."),
	C("clip_disk_cache_evicted_chunks_total", "disk_cache", "evicted",
	  "Disk cache chunks evicted to stay under the bound or to free space."),
	C("clip_disk_cache_declined_chunks_total", "disk_cache", "declined",
	  "Chunks the disk cache did not keep for want of room."),
	G("clip_disk_cache_full", "disk_cache", "full",
	  "1 while the disk cache's filesystem is full."),
	G("clip_memory_cache_usage_bytes", "memory_cache", "usage",
	  "Bytes the memory cache holds."),
	G("clip_memory_cache_max_bytes", "memory_cache", "max", "Bound of the memory cache."),
	G("clip_memory_cache_chunks", "memory_cache", "chunks", "Chunks the memory cache holds."),
	C("clip_memory_cache_stores_total", "memory_cache", "stores",
	  "Chunks put in the memory cache and kept."),
	C("clip_memory_cache_evicted_chunks_total", "memory_cache", "evicted",
	  "Chunks the memory cache dropped to stay under its bound."),
};

/* A label value escaped as the format wants: backslash, double quote and
 * line feed. */
static void print_label_value(FILE *f, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\' || *s == '"')
			fprintf(f, "\\%c", *s);
		else if (*s == '\n')
			fputs("\\n", f);
		else
			fputc(*s, f);
	}
}

static bool is_value(const json_t *v)
{
	return json_is_number(v) || json_is_boolean(v);
}

/* One sample: the family name, its labels, the value. */
static void print_sample(FILE *f, const struct family *fam, const char *mountpoint,
			 const char *const labels[][2], size_t nlabels, const json_t *v)
{
	fprintf(f, "%s{mountpoint=\"", fam->name);
	print_label_value(f, mountpoint);
	fputc('"', f);
	for (size_t i = 0; i < nlabels; i++) {
		fprintf(f, ",%s=\"", labels[i][0]);
		print_label_value(f, labels[i][1]);
		fputc('"', f);
	}
	fputs("} ", f);
	if (json_is_boolean(v))
		fputs(json_is_true(v) ? "1" : "0", f);
	else if (fam->scale != 0)
		fprintf(f, "%.9g", json_number_value(v) * fam->scale);
	else if (json_is_integer(v))
		fprintf(f, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
	else
		fprintf(f, "%.17g", json_real_value(v));
	fputc('\n', f);
}

/* HELP and TYPE, before the family's first sample. */
static void header(FILE *f, const struct family *fam, bool *started)
{
	if (!*started)
		fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", fam->name, fam->help, fam->name,
			fam->type);
	*started = true;
}

/* The samples of one family in `root`; nothing at all (no HELP, no TYPE)
 * when the mount reports none. */
static void print_family(FILE *f, const struct family *fam, json_t *root, const char *mountpoint)
{
	bool started = false;
	switch (fam->shape) {
	case ROOT: {
		json_t *o = fam->object ? json_object_get(root, fam->object) : root;
		json_t *v = json_object_get(o, fam->field);
		if (is_value(v)) {
			header(f, fam, &started);
			print_sample(f, fam, mountpoint, NULL, 0, v);
		}
		break;
	}
	case PER_TIER: {
		json_t *tiers = json_object_get(root, "tiers"), *t;
		const char *tier;
		json_object_foreach (tiers, tier, t) {
			json_t *v = json_object_get(t, fam->field);
			if (!is_value(v))
				continue;
			header(f, fam, &started);
			const char *labels[][2] = { { "tier", tier } };
			print_sample(f, fam, mountpoint, labels, 1, v);
		}
		break;
	}
	case PER_KEY: {
		json_t *o = json_object_get(root, fam->object), *v;
		const char *key;
		json_object_foreach (o, key, v) {
			if (!is_value(v))
				continue;
			header(f, fam, &started);
			const char *labels[][2] = { { fam->label, key } };
			print_sample(f, fam, mountpoint, labels, 1, v);
		}
		break;
	}
	case PER_LAYER: {
		json_t *layers = json_object_get(root, "layers"), *layer;
		size_t i;
		json_array_foreach (layers, i, layer) {
			const char *digest = json_string_value(json_object_get(layer, "digest"));
			const char *reason = json_string_value(json_object_get(layer, "fallback"));
			json_t *v = json_object_get(layer, fam->field);
			if (digest == NULL || !is_value(v) || (fam->layer_fallback && !reason))
				continue;
			header(f, fam, &started);
			const char *labels[][2] = { { "layer", digest }, { "reason", reason } };
			print_sample(f, fam, mountpoint, labels, fam->layer_fallback ? 2 : 1, v);
		}
		break;
	}
	}
}

void cli_stats_prometheus(FILE *f, json_t *root, const char *mountpoint)
{
	for (size_t i = 0; i < sizeof(families) / sizeof(families[0]); i++)
		print_family(f, &families[i], root, mountpoint);
}
