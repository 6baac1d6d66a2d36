"""``python -m lcaffect_pipeline.versions_cli``: the lake's versions from the shell.

    list      the tables' versions (time, operation, run) and which retention freed
    lineage   what a materialisation was built from, down to the corpus table versions
    sql       a DuckDB query over the corpus as of given versions
    rollback  make earlier versions of tables current (nothing is deleted)
    retain    free versions past a count or age that nothing kept was built from
    repair    move a table's damaged Delta log entries aside (back to its last readable version)
    upgrade   bring a lake written before versions up to date: manifest paths stored relative to it
              (--from the old root), shards held outside version folders written again by the next run

The lake is ``--lake`` or ``$LCAFFECT_LAKE`` (default ``./lake``), a folder or an ``s3://`` URL.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys


def _pairs(values: list[str]) -> dict[str, int]:
    out = {}
    for value in values:
        table, sep, version = value.partition("=")
        if not sep or not version.strip().isdigit():
            raise SystemExit(f"expected TABLE=VERSION (a whole number), got {value!r}")
        out[table.strip()] = int(version)
    return out


def _root(args):
    from .lake import as_path

    root = args.lake or os.environ.get("LCAFFECT_LAKE", "lake")
    return as_path(root) if "://" in str(root) else as_path(os.path.abspath(os.path.expanduser(root)))


def cmd_list(args) -> int:
    from . import tables

    root = _root(args)
    found = False
    for table in sorted(tables.TABLES):
        if tables.version(root, table) is None:
            continue
        found = True
        freed = tables.expired(root, table)
        print(f"{table}:")
        for h in tables.versions(root, table):
            when = dt.datetime.fromtimestamp((h["timestamp"] or 0) / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
            extra = " ".join(f"{k}={v}" for k, v in sorted(h.items()) if k not in ("version", "timestamp", "operation"))
            print(f"  v{h['version']:<4} {when}  {h['operation'] or ''} {extra}{'  (freed)' if h['version'] in freed else ''}")
    if not found:
        print(f"{root}: no versioned tables (materialise the corpus first)", file=sys.stderr)
        return 1
    return 0


def cmd_lineage(args) -> int:
    from . import versions

    rows = versions.lineage(_root(args), args.asset, args.manifest)
    if args.json:
        print(json.dumps({"lineage": rows, "table_versions": versions.table_versions(rows)}, indent=1, ensure_ascii=False))
        return 0
    for r in rows:
        tv = ", ".join(f"{t} v{v}" for t, v in sorted(r["table_version"].items()))
        print(f"{'  ' * r['depth']}{r['asset']}  {r['manifest_id']}{'  (missing)' if r.get('missing') else ''}  {tv}")
    print("corpus versions:", ", ".join(f"{t} {v}" for t, v in versions.table_versions(rows).items()) or "none")
    return 0


def cmd_sql(args) -> int:
    from . import leases
    from .corpus import connect_as_of

    root, pins = _root(args), _pairs(args.as_of)
    if not pins:
        return _query(connect_as_of(root, pins), args.query)
    # retention keeps the pinned versions while the query reads them
    with leases.held(root, f"versions-cli-sql-{os.getpid()}", versions={t: [v] for t, v in pins.items()}):
        return _query(connect_as_of(root, pins), args.query)


def _query(con, query: str) -> int:
    try:
        result = con.execute(query)
        names = [d[0] for d in result.description or []]
        print("\t".join(names))
        for row in result.fetchall():
            print("\t".join("" if v is None else str(v) for v in row))
    finally:
        con.close()
    return 0


def cmd_rollback(args) -> int:
    from .retention import rollback

    for table, r in rollback(_root(args), _pairs(args.targets)).items():
        print(f"{table}: version {r['restored']} is current again, as version {r['version']} (manifest {r['manifest_id']})")
    print("the next run recomputes the rolled-back stages' videos from their inputs")
    return 0


def cmd_retain(args) -> int:
    from .retention import run

    report = run(_root(args), keep_last=args.keep_last, max_age_days=args.max_age_days, dry_run=args.dry_run)
    verb = "would free" if args.dry_run else "freed"
    for table, t in report["tables"].items():
        print(f"{table}: {verb} versions {t['versions'] or 'none'} ({t['files']} files, {t['bytes']} bytes); "
              f"kept {t['kept']}; kept because built from: {t['referenced'] or 'none'}")
    print(f"{verb} {report['files']} files, {report['shard_folders']} shard folders, {report['bytes']} bytes in all")
    return 0


def cmd_repair(args) -> int:
    from .tables import repair

    done = repair(_root(args), args.table)
    print(f"{done['table']}: now at version {done['version']}; moved {', '.join(done['moved']) or 'nothing'} to {done['to']}")
    print("re-run the stage that writes it: its per-video files are kept, and its next commit adds them again")
    return 0


def cmd_upgrade(args) -> int:
    from .clips import shards_dir
    from .shards import unversioned_folders
    from .stages import forget
    from .versions import upgrade

    root = _root(args)
    old = _root(argparse.Namespace(lake=args.old_root)) if args.old_root else None
    print(f"{upgrade(root, old)} manifest and state files now name the lake's files relative to it")
    if unversioned := unversioned_folders(shards_dir(root)):
        # the segments stage keeps a video whose inputs are unchanged: without its state it writes the
        # video's shards again, in a version folder (the old folder's shards are left as they are)
        forget(root, "segments")
        print(f"{len(unversioned)} videos' shards are not in version folders ({', '.join(unversioned[:3])}…): "
              f"the next materialisation of segments writes them again")
    return 0


def main(argv: list[str] | None = None) -> int:
    from .tables import VersionError
    from .versions import ManifestError

    parser = argparse.ArgumentParser(prog="python -m lcaffect_pipeline.versions_cli", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lake", help="lake root (default $LCAFFECT_LAKE or ./lake)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="versions of every table").set_defaults(fn=cmd_list)
    p = sub.add_parser("lineage", help="what a materialisation was built from")
    p.add_argument("asset")
    p.add_argument("--manifest", help="a manifest id (default: the latest)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_lineage)
    p = sub.add_parser("sql", help="query the corpus as of versions")
    p.add_argument("query")
    p.add_argument("--as-of", action="append", default=[], metavar="TABLE=VERSION")
    p.set_defaults(fn=cmd_sql)
    p = sub.add_parser("rollback", help="make earlier versions current")
    p.add_argument("targets", nargs="+", metavar="TABLE=VERSION")
    p.set_defaults(fn=cmd_rollback)
    p = sub.add_parser("retain", help="free old versions nothing kept was built from")
    p.add_argument("--keep-last", type=int)
    p.add_argument("--max-age-days", type=float)
    p.add_argument("--dry-run", action="store_true")
    p.set_defaults(fn=cmd_retain)
    p = sub.add_parser("repair", help="move a table's damaged log entries aside")
    p.add_argument("table")
    p.set_defaults(fn=cmd_repair)
    p = sub.add_parser("upgrade", help="bring a lake written before versions up to date")
    p.add_argument("--from", dest="old_root", help="where the lake was written (default: where it is now)")
    p.set_defaults(fn=cmd_upgrade)
    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except (VersionError, ManifestError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
