"""Every fault and hostile input tried, one row each: the data behind docs/RELIABILITY.md.

A plain data module (no test code): ``scripts/reliability_doc.py`` renders it into the doc, and
``tests/test_reliability.py`` checks that the doc is current, that every row names a test that
exists, and that the counted cases match the tests. Add a row at the end for each new case, then
run ``.venv/bin/python scripts/reliability_doc.py``.

Each row: (fault / hostile input, cases, outcome, test id).
"""

RELIABILITY = [
    ("Hostile comment files per format (deep nesting, invalid UTF-8, NUL/control chars, negative/huge offsets, protobuf varint overflow, mode-7 not JSON, YouTube lines not JSON)", "36 files", "parsed with the contract kept or CommentFormatError naming the file; hostile element kept exactly or skipped and counted", "tests/test_reliability.py::test_hostile_file_parses_sensibly_or_raises_comment_format_error"),
    ("Real fixtures mutated (bit flips, truncation, deletion, random and real-fixture insertions)", "7 families x 200 mutants", "only CommentFormatError escapes; each parse under 5 s", "tests/test_reliability.py::test_mutated_real_fixture_parses_or_raises_comment_format_error"),
    ("Random bytes behind format prefixes", "250 inputs", "only CommentFormatError escapes", "tests/test_formats.py::test_random_bytes_parse_or_raise_comment_format_error"),
    ("XML external entity, external DTD", "2 files", "refused (DOCTYPE), nothing read", "tests/test_formats.py::test_external_entity_is_refused"),
    ("Billion laughs", "1 file", "refused (DOCTYPE)", "tests/test_formats.py::test_billion_laughs_is_refused"),
    ("100 MB single-line XML", "1 file", "bounded memory", "tests/test_formats.py::test_100mb_single_line_xml_in_bounded_memory"),
    ("Full disk (256 KiB tmpfs) writing Parquet and shards", "2 writers", "ENOSPC; no partial file under its final name, no temp file", "tests/test_reliability.py::test_full_tmpfs_parquet_shards_and_checkpoint_leave_nothing"),
    ("Full disk writing a checkpoint", "1 writer", "no checkpoint published, nothing left", "tests/test_reliability.py::test_full_tmpfs_checkpoint_is_not_published"),
    ("Simulated ENOSPC (no root needed) over an existing file", "1", "earlier version intact, temp removed", "tests/test_reliability.py::test_simulated_enospc_replaces_nothing_already_there"),
    ("ENOSPC error names the file", "1", "clear error naming the final file", "tests/test_reliability.py::test_enospc_error_names_the_file"),
    ("SIGKILL while writing Parquet, shards, checkpoints", "5 kills at random points", "every final-named file complete; re-run equals a clean run", "tests/test_reliability_slow.py::test_sigkill_during_parquet_shard_and_checkpoint_writes"),
    ("Cookie (SESSDATA) and raw author ids through a Dagster corpus run", "5 videos, 40 ids, every lake file + event log", "absent from everything derived", "tests/test_reliability.py::test_corpus_run_leaks_neither_the_cookie_nor_raw_author_ids"),
    ("Author salt is configuration", "4 settings", "hash depends on salt; no salt gives null authors", "tests/test_reliability.py::test_author_salt_is_configuration_not_code"),
    ("HTTP 429/412/500, resets, stalls, truncated bodies", "every fault in a plan", "retried, then success", "tests/test_sources.py::test_retries_through_every_fault_then_succeeds"),
    ("Retry budget exhausted", "1 video", "nothing partial visible; re-run fetches only the rest", "tests/test_sources.py::test_exhausted_budget_leaves_nothing_visible_and_the_rerun_fetches_only_the_rest"),
    ("Cookies in logs, errors, manifests", "1 run", "masked", "tests/test_sources.py::test_cookies_reach_the_server_but_never_logs_errors_or_manifests"),
    ("Hostile ids as lake paths", "hypothesis ids", "stay under the lake root", "tests/test_lake.py::test_safe_name_stays_under_root"),
    ("Hostile video id on download", "1", "stays in its folder", "tests/test_videos.py::test_hostile_video_id_stays_in_the_folder"),
    ("Truncated / zero-byte / wrong-container videos", "several files", "VideoDecodeError naming the file", "tests/test_segments.py::test_broken_files_raise_video_decode_error"),
    ("Pickled checkpoint payloads", "1", "refused", "tests/test_v2lc.py::test_pickled_payloads_are_refused"),
    ("Training killed and resumed", "1 kill", "identical weights", "tests/test_train_v2lc.py::test_killed_run_resumes_to_identical_weights"),
    ("NaN loss", "1", "stops before any poisoned checkpoint", "tests/test_train_v2lc.py::test_nan_loss_stops_before_any_poisoned_checkpoint"),
    ("Dagster step retry during training", "1", "resumes from its checkpoint", "tests/test_v2lc_asset.py::test_a_retried_step_resumes_from_its_checkpoint"),
    ("Every video of a per-video asset fails (or more than scope.max_failed_share)", "8 verdict cases, 3 runs", "the run fails, reasons grouped by error type; one bad video among many only shows in the per-video table", "tests/test_run_outcome.py::test_a_run_whose_videos_all_failed_fails_with_reasons_grouped"),
    ("Failure share at, under and over the limit", "8 cases", "each outcome forced", "tests/test_run_outcome.py::test_failure_verdict_forces_each_outcome"),
    ("Asset checks over an empty lake (no files, no rows, no segments)", "7 checks", "not passed, saying why", "tests/test_run_outcome.py::test_checks_over_an_empty_lake_do_not_pass"),
    ("Comments past a video's end; durations under the lake's renamed state folder", "1 video, 3 durations", "unknown: not passed; inside: passed; past the end: failed with the count", "tests/test_run_outcome.py::test_offsets_check_finds_the_probed_duration_and_fails_past_the_end"),
    ("Retrieval check above, at and below chance, and without held-out videos", "4 cases", "passed only above chance", "tests/test_run_outcome.py::test_retrieval_check_is_decided_by_r1_against_chance"),
    ("Unknown cleaning field (the once documented {\"min_length\": 2})", "2 forms (options, options_json)", "refused before any video runs, naming the field and the valid ones", "tests/test_run_outcome.py::test_an_unknown_options_json_field_fails_the_run_before_any_video"),
    ("Test needing ffmpeg, ../shared or an undeclared extra, in CI", "4 inner tests", "fails in CI; skips elsewhere with a 'not run here' list", "tests/test_skip_policy.py::test_ci_fails_a_test_that_needs_shared_or_ffmpeg"),
    ("Writer SIGKILLed mid-write (shard temp file)", "1 kill", "the next write into the folder removes the temp; a live writer's temp is kept", "tests/test_operations.py::test_a_killed_writers_temporary_is_removed_by_the_next_write"),
    ("Concurrent builds of corpus.duckdb", "4 processes x 5 builds", "none fails, no temp left", "tests/test_operations.py::test_concurrent_builds_of_the_corpus_catalog_do_not_collide"),
    ("Lake root holding a quote (')", "1 lake", "corpus.duckdb views work", "tests/test_operations.py::test_a_lake_root_holding_a_quote_builds_the_corpus_catalog"),
    ("A run's process group SIGKILLed mid-fan-out", "1 run, 8 videos", "no step survives, nothing written after; run monitoring marks the run failed (retry policy applies)", "tests/test_operations.py::test_a_killed_run_leaves_no_step_behind_and_monitoring_fails_it"),
]
