"""The ``rayline`` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from collections.abc import Sequence

from pipelines.spec import STORAGE_ENV, SpecError, load_spec

EPILOG = textwrap.dedent(
    """\
    examples:
      rayline run pipelines/configs/ranking.yaml
      rayline run pipelines/configs/ctr.yaml data.source.params.rows=20000 models.0.num_boost_round=50
      rayline validate pipelines/configs/classification.yaml
      rayline models list
      rayline models show ranking-demo 2

    Storage: the spec's `storage` (default ./storage), or the RAYLINE_STORAGE environment variable,
    which wins for every command so `rayline models` finds what `rayline run` wrote.
    Cluster: --address, else RAY_ADDRESS, else the spec's ray.address, else a local Ray is started.
    """
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rayline",
        description="One YAML spec to a trained, evaluated and registered ranking or classification model on Ray.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run a pipeline spec end to end",
        description="Validate the spec, connect to Ray (or start it locally), then ingest, split, fit "
        "features, train, evaluate on the whole test split and register the model.",
    )
    run.add_argument("spec", help="path to a pipeline YAML (see pipelines/configs/)")
    run.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="dotted overrides applied before validation, e.g. models.0.num_boost_round=50",
    )
    run.add_argument(
        "--address", help="Ray cluster address (default: RAY_ADDRESS, spec ray.address, or local)"
    )
    run.add_argument("--storage", help=f"storage root (overrides the spec; same as {STORAGE_ENV})")

    val = sub.add_parser(
        "validate",
        help="validate a spec without starting Ray",
        description="Load the spec with overrides and report every problem, without starting Ray.",
    )
    val.add_argument("spec")
    val.add_argument("overrides", nargs="*", metavar="KEY=VALUE")

    models = sub.add_parser(
        "models",
        help="list and inspect registered models",
        description="Read the registry under the storage root.",
    )
    models.add_argument("--storage", help=f"storage root (default: {STORAGE_ENV} or ./storage)")
    msub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    msub.add_parser("list", help="every model with its versions and aliases")
    show = msub.add_parser("show", help="one version's metrics, lineage and files")
    show.add_argument("model")
    show.add_argument(
        "version", nargs="?", help="a version number or an alias (default: production)"
    )
    return p


def _storage(arg: str | None) -> str:
    return arg or os.environ.get(STORAGE_ENV) or "./storage"


def cmd_validate(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec, args.overrides)
    print(
        f"{args.spec}: valid {spec.task} spec {spec.name!r}; {len(spec.models)} model(s); "
        f"storage {spec.storage_root()}"
    )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec, args.overrides)  # fails before Ray starts
    import ray

    from pipelines.cluster import check_cluster, connect
    from pipelines.runner import PipelineError, Runner

    local = connect(spec, args.address)
    try:
        problems = check_cluster(spec)
        if problems:
            print(
                "rayline: the spec does not fit this cluster:\n  - " + "\n  - ".join(problems),
                file=sys.stderr,
            )
            return 2
        try:
            Runner(spec, storage=args.storage).run()
        except PipelineError as e:
            print(f"rayline: run failed: {e}", file=sys.stderr)
            return 1
    finally:
        if local:
            ray.shutdown()
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from components import bundle
    from components.registry import Registry, RegistryError

    reg = Registry(_storage(args.storage))
    if args.models_command == "list":
        names = reg.models()
        if not names:
            print(f"no models registered under {_storage(args.storage)}/registry")
            return 0
        for name in names:
            aliases = reg.aliases(name)
            print(f"{name}")
            for v in reg.versions(name):
                tags = [a for a, n in aliases.items() if n == v.version]
                try:
                    metrics = bundle.read_json(v.path, "metrics.json")
                    key = metrics.get("selection_metric")
                    m = f"{key}={metrics['test'][key]:.4f}" if key else ""
                except (bundle.BundleError, KeyError, FileNotFoundError):
                    m = "(no metrics)"
                print(f"  v{v.version:<4} {v.created_at:<26} {m:<22} {' '.join(tags)}")
        return 0
    try:
        ref = args.version
        if ref is None:
            mv = reg.resolve(args.model)
        elif ref.isdigit():
            mv = reg.resolve(args.model, version=int(ref))
        else:
            mv = reg.resolve(args.model, alias=ref)
    except RegistryError as e:
        print(f"rayline: {e}", file=sys.stderr)
        return 1
    manifest = bundle.verify_bundle(mv.path)
    print(f"{mv.model} v{mv.version}  [{', '.join(mv.aliases) or 'no alias'}]  {mv.path}")
    for name in ("metrics.json", "lineage.json", "model.json"):
        if name in manifest["files"]:
            doc = bundle.read_json(mv.path, name)
            if name == "model.json":
                doc = {
                    k: doc[k]
                    for k in ("kind", "task", "best_iteration", "rounds", "params")
                    if k in doc
                }
            print(f"\n{name}:\n{json.dumps(doc, indent=1)}")
    print("\nfiles (sha256 verified): " + ", ".join(sorted(manifest["files"])))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    # Overrides may come before or after options (`run SPEC --storage S k=v`): argparse stops
    # collecting a positional list at the first option, so pick up the rest here.
    args, extra = parser.parse_known_args(argv)
    leftover = [e for e in extra if e.startswith("-") or "=" not in e]
    if leftover or (extra and args.command not in ("run", "validate")):
        parser.error(f"unrecognized arguments: {' '.join(leftover or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    try:
        if args.command == "validate":
            return cmd_validate(args)
        if args.command == "run":
            return cmd_run(args)
        return cmd_models(args)
    except SpecError as e:
        print(f"rayline: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rayline: interrupted", file=sys.stderr)
        return 130
