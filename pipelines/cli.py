"""The ``rayline`` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from components.bundle import BundleError
from components.registry import Registry, RegistryError
from pipelines.errors import PipelineError
from pipelines.ray_logs import Console, capture
from pipelines.spec import STORAGE_ENV, PipelineSpec, SpecError, load_spec
from serve.config import ServeArgs

if TYPE_CHECKING:
    from pipelines.cluster import RayConnection
    from pipelines.runner import Runner

Printer = Callable[[str], None]

EPILOG = textwrap.dedent(
    """\
    examples:
      rayline run pipelines/configs/ranking.yaml
      rayline run pipelines/configs/ctr.yaml data.source.params.rows=20000 models.0.num_boost_round=50
      rayline validate pipelines/configs/classification.yaml
      rayline models list
      rayline models show ranking-demo 2
      rayline deploy ranking-demo --version 2 max_replicas=4
      rayline promote ranking-demo 3
      rayline rollback ranking-demo
      rayline report 20261127-080550
      RAY_AUTH_MODE=token rayline submit pipelines/configs/ranking.yaml --address http://head:8265
      rayline predict ranking-demo data/candidates.parquet scored/ --keys request_id,item_id
      rayline monitor ranking-demo --labels s3://bucket/labels/2026-12-03/ --since 2026-12-03

    Storage: the spec's `storage` (default ./storage), or the RAYLINE_STORAGE environment variable,
    which wins for every command so `rayline models` finds what `rayline run` wrote.
    Ray: --address, else RAY_ADDRESS, else the spec's ray.address, else a cluster that `ray start`
    started on this machine (while its head answers), else a new local Ray for the command. The
    first lines of a run say which (local new, local existing, remote). Ray's own output (worker
    logs, Ray Data, Tune, Serve) goes to a log file named there; --verbose shows it instead.
    """
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rayline",
        description="One YAML spec to a trained, evaluated and registered ranking, classification or regression model on Ray.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run a pipeline spec end to end",
        description="Validate the spec, connect to Ray (or start it locally), then ingest, split, fit "
        "features, train, evaluate on the whole test split and register the model. Which Ray: "
        "--address, else RAY_ADDRESS, else the spec's ray.address, else a cluster that `ray start` "
        "started on this machine (found in Ray's ray_current_cluster file, while its head "
        "answers): each of these is joined, and the run leaves it running (an endpoint stays up "
        "after the command). Only without any of them does the run start a local Ray of its own "
        "(spec ray.num_cpus/num_gpus), which stops when the command ends. The first lines say "
        "which: local new, local existing (the head is on this machine) or remote. The console "
        "shows rayline's own lines; Ray's output (worker and actor logs, Ray Data, Tune, Serve, "
        "Ray's core) goes to ray.log in the run directory, named at the start.",
    )
    run.add_argument("spec", help="path to a pipeline YAML (see pipelines/configs/)")
    run.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="dotted overrides applied before validation, e.g. models.0.num_boost_round=50",
    )
    run.add_argument(
        "--address",
        help="Ray cluster address to join (default: RAY_ADDRESS, spec ray.address, a `ray start` "
        "cluster on this machine, else a new local Ray)",
    )
    run.add_argument(
        "--verbose",
        action="store_true",
        help="show Ray's own output (worker logs, Ray Data, Tune, Serve) on the console instead "
        "of writing it to ray.log in the run directory",
    )
    run.add_argument("--storage", help=f"storage root (overrides the spec; same as {STORAGE_ENV})")
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue the newest unfinished run of this pipeline: reuse its ingested data, "
        "features and trained models when their inputs are unchanged, and restore its Ray Tune "
        "searches without repeating finished trials",
    )
    run.add_argument(
        "--no-wait",
        action="store_true",
        help="return once the endpoint answers instead of serving until Ctrl-C (needs a running "
        "cluster to join: --address, RAY_ADDRESS or a `ray start` one, so the endpoint outlives "
        "the command)",
    )

    sbm = sub.add_parser(
        "submit",
        help="run a spec as a Ray job on a running cluster and follow it",
        description="Upload the working directory (without .git, virtualenvs, storage folders, "
        "data files, caches, and secrets: .env*, *.pem, *.key, ssh keys (id_rsa*, id_ed25519*, "
        "...), secrets/, *.db; the list is EXCLUDES in pipelines/submit.py, and Ray also honours "
        ".gitignore and .rayignore), print how many files and how many bytes go, and run "
        "`rayline run SPEC overrides...` as a Ray job; print the job id, stream its logs, and "
        "exit 0 if it succeeded, 1 if it failed or was stopped. Needs RAY_AUTH_MODE=token and the "
        "cluster's token (RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN; see clusters/README.md).",
    )
    sbm.add_argument("spec")
    sbm.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    sbm.add_argument(
        "--address",
        help="the cluster's dashboard address, e.g. http://127.0.0.1:8265 (default: RAY_ADDRESS)",
    )
    sbm.add_argument("--working-dir", default=".", help="the folder to upload (default: .)")
    sbm.add_argument("--storage", help="RAYLINE_STORAGE for the job (default: the cluster's)")
    sbm.add_argument("--no-follow", action="store_true", help="print the job id and return at once")

    dep = sub.add_parser(
        "deploy",
        help="serve a registered model version on Ray Serve",
        description="Deploy (or switch, without downtime) a registered version as a Ray Serve "
        "application named after the model. Serving options are KEY=VALUE pairs of a spec's "
        "serve: section (e.g. max_replicas=4 port=8001).",
    )
    dep.add_argument("model")
    which = dep.add_mutually_exclusive_group()
    which.add_argument("--version", type=int, help="a version number")
    which.add_argument("--alias", default="production", help="an alias (default: production)")
    dep.add_argument(
        "options", nargs="*", metavar="KEY=VALUE", help="serve options (see serve/config.py)"
    )
    dep.add_argument(
        "--shadow",
        metavar="VERSION",
        help="a version number or alias scored beside production on the same requests; it never "
        "answers, its outputs go to the prediction log (serve.shadow)",
    )
    dep.add_argument(
        "--canary",
        metavar="VERSION",
        help="a version number or alias that answers --share of the requests, sticky per "
        "X-Rayline-Key header value; `rayline promote` or `rollback` ends it (serve.canary)",
    )
    dep.add_argument(
        "--share",
        type=float,
        help="the canary's share of requests, 0-1 (serve.canary_share, default 0.05)",
    )
    dep.add_argument("--storage", help=f"storage root (default: {STORAGE_ENV} or ./storage)")
    dep.add_argument(
        "--address",
        help="Ray cluster address (default: RAY_ADDRESS, a `ray start` cluster on this machine, "
        "else a new local Ray that serves until Ctrl-C); a running cluster keeps the endpoint "
        "after the command",
    )

    prom = sub.add_parser(
        "promote",
        help="make a registered version the production version",
        description="Point the production alias at VERSION (recorded in the alias history). If "
        "the model is being served on the cluster (--address or RAY_ADDRESS), the running "
        "deployment switches to it without downtime; a canary deployment ends (all traffic to "
        "the new production version).",
    )
    prom.add_argument("model")
    prom.add_argument("version", type=int)
    roll = sub.add_parser(
        "rollback",
        help="put the previous production version back",
        description="Point the production alias back at the version it held before the current "
        "one (versions left by earlier rollbacks are skipped) and switch a running deployment. "
        "With a canary deployed, end the canary instead: production keeps every request.",
    )
    roll.add_argument("model")
    for sp_ in (prom, roll):
        sp_.add_argument("--storage", help=f"storage root (default: {STORAGE_ENV} or ./storage)")
        sp_.add_argument(
            "--address", help="Ray cluster address of a running deployment (default: RAY_ADDRESS)"
        )

    mon = sub.add_parser(
        "monitor",
        help="online metrics, drift and skew of a served model from its prediction log",
        description="Read MODEL's prediction log (<storage>/logs/MODEL/) with Ray Data and report, "
        "per version and time window: traffic and latency; every profiled feature's drift "
        "against the training split's profile (PSI, chi-square, missing and unseen shares; "
        "bundles carry profile.json); a re-scored sample of logged rows (online and offline "
        "scores must agree within monitor.max_skew); how a shadow or canary agrees with "
        "production. With --labels (Parquet or CSV holding request_id, row and the label), the "
        "labelled rows' metrics per version and window, calibration, and every shadow or canary "
        "against production on the same rows with the gate's paired bootstrap. Writes "
        "monitor.json and monitor.html (--out, default <storage>/monitor/MODEL/<time>/). Exit "
        "2 when a threshold of the spec's monitor: section is breached (max_psi, "
        "max_unseen_rate, min_metrics, max_metrics, max_skew), 1 on an error, else 0. --act "
        "ends a running canary by monitor.canary: promoted when confidently better on the "
        "logged labels, rolled back when worse or slower beyond the thresholds; the alias "
        "history records the evidence.",
    )
    mon.add_argument("model")
    mon.add_argument("--labels", help="labels: a Parquet or CSV file, folder or URI")
    mon.add_argument("--label", help="the labels' label column (default: the model's label name)")
    mon.add_argument(
        "--on", default="request_id,row", help="join keys, comma-separated (default request_id,row)"
    )
    mon.add_argument("--since", help="first day or time to read (ISO, UTC; default: all)")
    mon.add_argument("--until", help="read up to this day or time, excluded (ISO, UTC)")
    mon.add_argument("--window", choices=["day", "hour"], help="time window (monitor.window)")
    mon.add_argument(
        "--spec",
        help="a pipeline spec whose monitor:, evaluation: and registry.gate apply; KEY=VALUE "
        "arguments override it (monitor.max_psi=0.2)",
    )
    mon.set_defaults(overrides=[])
    mon.add_argument("--out", help="report folder (default <storage>/monitor/MODEL/<time>/)")
    mon.add_argument(
        "--act", action="store_true", help="promote or roll back a running canary (monitor.canary)"
    )
    mon.add_argument("--storage", help=f"storage root (default: {STORAGE_ENV} or ./storage)")
    mon.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else local)")
    mon.add_argument("--verbose", action="store_true", help="show Ray's own output here")

    pred = sub.add_parser(
        "predict",
        help="score a dataset offline with Ray Data (batch inference)",
        description="Read INPUT (a file, directory, glob or URI), score every row with the model "
        "bundle through a Ray Data actor pool, and write a folder of Parquet files OUTPUT with the scores, "
        "the --keys columns and each row's source file and row number. OUTPUT is written aside and "
        "then put in place as a whole, replacing what was there; so an existing OUTPUT is replaced "
        "only when it is an earlier `rayline predict` output (every output folder holds a "
        "_RAYLINE_PREDICTIONS file) or an empty folder, anything else only with --overwrite. "
        "Refused even with --overwrite: OUTPUT that is the input, holds it or lies inside it (a "
        "folder input, or where the glob could match), that is or holds the current folder, the "
        "home folder or the storage, or that is not a local path.",
    )
    pred.add_argument("model")
    pred.add_argument("input")
    pred.add_argument("output")
    pwhich = pred.add_mutually_exclusive_group()
    pwhich.add_argument("--version", type=int)
    pwhich.add_argument("--alias", default="production")
    pred.add_argument(
        "--format", choices=["parquet", "csv", "jsonl", "libsvm"], help="default: by extension"
    )
    pred.add_argument(
        "--keys", default="", help="comma-separated input columns to copy to the output"
    )
    pred.add_argument("--concurrency", type=int, default=2, help="scoring actors (default 2)")
    pred.add_argument("--batch-size", type=int, default=4096, help="rows per batch (default 4096)")
    pred.add_argument("--storage", help=f"storage root (default: {STORAGE_ENV} or ./storage)")
    pred.add_argument(
        "--address",
        help="Ray cluster address (default: RAY_ADDRESS, a `ray start` cluster on this machine, "
        "else a new local Ray)",
    )
    for sp_ in (dep, pred):
        sp_.add_argument(
            "--verbose",
            action="store_true",
            help="show Ray's own output on the console instead of writing it to "
            "<storage>/logs/<command>-<time>-<pid>.ray.log",
        )
    pred.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing OUTPUT that is not an earlier rayline output (a file, a link, "
        "a folder of other files); never the input, the current folder, home or the storage",
    )

    rep = sub.add_parser(
        "report",
        help="where a run's report is, and its summary",
        description="RUN is a run directory, or a run id (or its unique prefix) under "
        "<storage>/runs/. Prints the paths of report.html / report.md and the run's summary.",
    )
    rep.add_argument("run")
    rep.add_argument("--storage", help=f"storage root (default: {STORAGE_ENV} or ./storage)")

    val = sub.add_parser(
        "validate",
        help="validate a spec without starting Ray",
        description="Load the spec with overrides and report every problem, without starting Ray. "
        "With --data, also read the columns of the data (the first file of data.source or of "
        "data.sources.train; parquet and csv without reading rows), resolve the feature selectors, "
        "print the resolved feature lists and check that every column the spec names is there.",
    )
    val.add_argument("spec")
    val.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    val.add_argument(
        "--data",
        action="store_true",
        help="resolve feature selectors against the data's columns and print the feature lists",
    )

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
    """The storage root a command opens: --storage, else RAYLINE_STORAGE, else ./storage (an
    s3:// root with its endpoint from AWS_ENDPOINT_URL, components.uris)."""
    from components import uris

    return uris.normalize(arg or os.environ.get(STORAGE_ENV) or "./storage")


def cmd_validate(args: argparse.Namespace) -> int:
    from pipelines import columns

    spec = load_spec(args.spec, args.overrides)
    where: str = ""
    cols: list[str] = []
    if args.data:  # selectors resolved (and the whole spec checked again) before "valid"
        where, cols = columns.discover(spec)
        spec = columns.resolve(spec, cols, where)
        absent = columns.missing(spec, cols)
        if absent:
            raise PipelineError(f"{where} has no column {absent}, which the spec names")
    print(
        f"{args.spec}: valid {spec.task} spec {spec.name!r}; {len(spec.models)} model(s); "
        f"storage {spec.storage_root()}"
    )
    for warning in spec.warnings():
        print(f"  warning: {warning}")
    if args.data:
        print(f"  {len(cols)} columns in {where}")
        for line in columns.describe(spec):
            print(line)
    for name, sel in spec.features.selectors().items():
        print(
            f"  features.{name} {sel.describe()}: resolved against the data's columns when the "
            "run starts (--data resolves it now)"
        )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec, args.overrides)  # fails before Ray starts
    import ray

    from pipelines.cluster import target_address
    from pipelines.ray_logs import LOG_NAME
    from pipelines.runner import Runner

    joined = ray.is_initialized() or target_address(args.address, spec.ray.address)[0]
    if args.no_wait and spec.serve.enabled and not joined:
        print(
            "rayline: --no-wait needs a running Ray cluster to join (--address, RAY_ADDRESS or one "
            "`ray start` started on this machine): a local Ray started by this command stops with "
            "it. Start one with `ray start --head`, or drop --no-wait.",
            file=sys.stderr,
        )
        return 2
    con = Console()
    runner = Runner(spec, out=con.say, storage=args.storage, resume=args.resume)
    # Ray's own output goes to the run's log file, unless asked for (--verbose) or this process
    # is already connected (a notebook or test session: its Ray output is its owner's business).
    log = None if args.verbose or ray.is_initialized() else runner.paths.log_file(LOG_NAME)
    with capture(log, f"rayline run {args.spec}", con):
        return _run(args, spec, runner, con)


def _run(args: argparse.Namespace, spec: PipelineSpec, runner: Runner, con: Console) -> int:
    """``rayline run`` once rayline's lines go to ``con``: connect, check, run, serve."""
    import ray

    from pipelines.cluster import IN_PROCESS, check_cluster, connect_spec, storage_note

    try:
        conn = connect_spec(spec, args.address)
    except Exception as e:  # an unreachable address, a cluster that refuses the token, ...
        con.error(f"rayline: could not start or join Ray: {type(e).__name__}: {e}")
        if con.log_path:
            con.error(f"  Ray's output: {con.log_path}")
        return 1
    _own_signals()  # after connecting: Ray's core worker installs its own SIGTERM handler
    try:
        problems = check_cluster(spec)
        if problems:
            con.error(
                "rayline: the spec does not fit this cluster:\n  - " + "\n  - ".join(problems)
            )
            return 2
        notes = [conn.describe()]
        shared = storage_note(runner.storage)
        if shared:
            notes.append(shared)
        if con.log_path:
            notes.append(f"Ray's own output: {con.log_path} (--verbose shows it here)")
        try:
            report = runner.run(notes=["  " + n.replace("\n", "\n  ") for n in notes])
        except PipelineError as e:
            con.error(f"rayline: run failed: {e}")
            return 1
        except KeyboardInterrupt:
            con.error(
                f"\nrayline: interrupted; the run stopped and can continue with "
                f"`rayline run {args.spec} --resume`"
            )
            return 130
        if report.get("endpoint"):
            serve_args = spec.serve_args(runner.storage, report["endpoint"]["version"])
            _print_endpoint(
                serve_args, report["model"]["path"], report["endpoint"].get("auth"), con.say
            )
            if conn.started and not args.no_wait:
                _serve_until_interrupted(con.say)
    finally:
        if conn.kind != IN_PROCESS:
            ray.shutdown()  # inside the capture: what Ray prints on the way out is logged too
    return 0


def _print_endpoint(
    serve_args: ServeArgs, bundle_path: str, auth: str | None = None, say: Printer = print
) -> None:
    """The curl examples for the replica's real auth mode (``auth``, as its /healthz said)."""
    from pipelines.deploy import curl_examples

    auth = auth or serve_args.auth
    if auth == "none":
        say(
            f"\n  note: serve.auth is none: anyone who can reach {serve_args.host}:{serve_args.port} "
            "can call every endpoint (set serve.auth: api_key and export RAYLINE_API_KEY)"
        )
    elif not serve_args.api_key_file and not os.environ.get(serve_args.api_key_env or ""):
        say(
            f"\n  note: the replicas have their API key, but {serve_args.api_key_env} is not set "
            "in this shell: export it to run the examples"
        )
    say("\n  try it:\n" + curl_examples(serve_args, bundle_path, auth))


def _own_signals() -> None:
    """Ctrl-C (SIGINT) and SIGTERM stop a run wherever it is: both raise KeyboardInterrupt in the
    main thread (Ray Train and Tune run off it, so their own handlers never take over)."""
    import signal

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def _serve_until_interrupted(say: Printer = print) -> None:
    import time

    from ray import serve

    _own_signals()  # in case anything replaced them
    say("\n  serving until Ctrl-C (with a running cluster, --no-wait returns instead)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        say("\n  stopping the endpoint")
        serve.shutdown()


def _log_file(storage: str, command: str) -> str:
    """Where a command other than ``run`` keeps Ray's output: <storage>/logs/ (local storage) or
    the temp folder (object-store storage)."""
    import datetime as dt

    from pipelines.run_dir import local_logs_root

    root = storage if "://" not in storage else local_logs_root()
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return os.path.join(root, "logs", f"{command}-{stamp}-{os.getpid()}.ray.log")


def _quiet_log(args: argparse.Namespace, command: str) -> str | None:
    """The log file for Ray's output, or None to leave it on the console (--verbose, or Ray
    already connected in this process)."""
    import ray

    if getattr(args, "verbose", False) or ray.is_initialized():
        return None
    return _log_file(_storage(args.storage), command)


def _ray_init(address: str | None, con: Console, ingress: str | None = None) -> RayConnection:
    """Join ``address`` (else RAY_ADDRESS, else a `ray start` cluster on this machine) or start a
    local Ray serving through ``ingress``; say which on ``con``."""
    from pipelines.cluster import open_ray

    conn = open_ray(address, ingress=ingress)
    con.say(conn.describe())
    if con.log_path:
        con.say(f"Ray's own output: {con.log_path} (--verbose shows it here)")
    return conn


def cmd_deploy(args: argparse.Namespace) -> int:
    import ray

    from pipelines.cluster import IN_PROCESS
    from pipelines.deploy import DeployError, deploy
    from pipelines.spec import parse_override

    options: dict[str, object] = {}
    for item in args.options:
        path, value = parse_override(item)
        options[".".join(path)] = value
    for name, value in (("shadow", args.shadow), ("canary", args.canary)):
        if value is not None:
            options[name] = value
    if args.share is not None:
        if args.canary is None:
            print("rayline: --share is the canary's share: give --canary VERSION", file=sys.stderr)
            return 2
        options["canary_share"] = args.share
    try:
        base = {"storage": _storage(args.storage), "model": args.model, "version": args.version}
        serve_args = ServeArgs.model_validate({**base, "alias": args.alias, **options})
    except ValidationError as e:
        print(f"rayline: invalid serve options: {e}", file=sys.stderr)
        return 2
    with capture(_quiet_log(args, "deploy"), f"rayline deploy {args.model}") as con:
        conn = _ray_init(args.address, con, serve_args.ingress)
        try:
            try:
                info = deploy(serve_args, out=con.say)
            except DeployError as e:  # e.g. the replicas refused to start without their API key
                con.error(f"rayline: deploy failed: {e}")
                return 1
            except KeyboardInterrupt:
                if conn.started:  # this command's own Ray (and Serve) stop with it
                    raise
                # Not rolled back: Serve's controller owns the update and finishes it (the
                # running version keeps serving until the new replicas are healthy); undoing it
                # from here could itself be cut short and leave neither version.
                con.error(
                    f"rayline: interrupted; an update of {args.model} already handed to the "
                    "cluster's Serve goes on (the running version serves until the new one is "
                    f"healthy); `rayline deploy {args.model} --version <previous>` goes back"
                )
                return 130
            _print_endpoint(
                serve_args.model_copy(update={"version": info["version"]}),
                Registry(serve_args.storage).path(args.model, info["version"]),
                info.get("auth"),
                con.say,
            )
            if conn.started:
                _serve_until_interrupted(con.say)
        finally:
            if conn.kind != IN_PROCESS:
                ray.shutdown()
    return 0


def cmd_release(args: argparse.Namespace) -> int:
    """``promote`` and ``rollback``: move the production alias, then any running deployment."""
    from pipelines.deploy import canary_of, end_canary

    storage = _storage(args.storage)
    reg = Registry(storage)
    canary = canary_of(storage, args.model)
    if args.command == "promote":
        before = reg.aliases(args.model).get("production")
        reg.resolve(args.model, version=args.version)  # a clear error for an unknown version
        why = "canary promoted by hand" if canary == args.version else "promoted by hand"
        reg.set_alias(args.model, "production", args.version, note=why)
        if canary is not None:
            end_canary(storage, args.model)
            print(f"{args.model}: canary v{canary} ended (all traffic to production)")
        old, new = before, args.version
    elif canary is not None:  # rolling back a canary: production keeps every request
        end_canary(storage, args.model)
        new = old = reg.resolve(args.model).version
        reg.set_alias(
            args.model,
            "production",
            new,
            note=f"canary v{canary} rolled back by hand; production stays v{new}",
        )
        print(f"{args.model}: canary v{canary} rolled back; production stays v{new}")
    else:
        old, new = reg.rollback(args.model)
    if old != new:
        print(f"{args.model}: production v{old if old is not None else '-'} -> v{new}")
    import ray

    from pipelines.cluster import IN_PROCESS, open_ray, target_address

    # the cluster run/deploy would join: --address, RAY_ADDRESS, or a `ray start` cluster here
    target, _ = target_address(args.address)
    if not target and not ray.is_initialized():
        print(
            "  no cluster given or running here (--address, RAY_ADDRESS, `ray start`): a running "
            f"endpoint keeps its version until `rayline deploy {args.model}`"
        )
        return 0
    from pipelines.deploy import switch_running

    conn = open_ray(target)
    try:
        if switch_running(storage, args.model, new, out=print):
            print(f"  the running deployment now serves v{new}")
        else:
            print(f"  {args.model} is not being served on this cluster: nothing else to update")
    finally:
        if conn.kind != IN_PROCESS:
            ray.shutdown()
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from pipelines.submit import submit

    spec = load_spec(args.spec, args.overrides)  # a bad spec fails here, not on the cluster
    address = args.address or os.environ.get("RAY_ADDRESS")
    if not address:
        print(
            "rayline: submit needs --address or RAY_ADDRESS (the dashboard, :8265)", file=sys.stderr
        )
        return 2
    try:
        job_id, status = submit(
            address,
            args.spec,
            args.overrides,
            working_dir=args.working_dir,
            storage=args.storage,
            follow=not args.no_follow,
            local_storage=[spec.storage, os.environ.get(STORAGE_ENV)],  # never uploaded
        )
    except ValueError as e:
        print(f"rayline: {e}", file=sys.stderr)
        return 2
    print(f"job {job_id}: {status}")
    return (
        0
        if status in ("SUCCEEDED", "PENDING", "RUNNING")
        and (args.no_follow or status == "SUCCEEDED")
        else 1
    )


def cmd_report(args: argparse.Namespace) -> int:
    from components import uris
    from components.bundle import Storage
    from pipelines import report

    given = uris.normalize(args.run) if uris.is_uri(args.run) else args.run
    if Storage(given).is_file("report.json"):
        run_dir = Storage(given)
    else:
        runs = Storage(_storage(args.storage)).child("runs")
        found = sorted(
            f"{pipeline}/{name}"
            for pipeline, is_dir in runs.list_dir().items()
            if is_dir
            for name, sub in runs.list_dir(pipeline).items()
            if sub and name.startswith(args.run) and runs.is_file(f"{pipeline}/{name}/report.json")
        )
        if len(found) != 1:
            what = "no run" if not found else f"{len(found)} runs"
            names = ", ".join(f.split("/")[1] for f in found[:5])
            print(
                f"rayline: {what} matching {args.run!r} under {uris.display(runs.location)}"
                + (f": {names}" if names else ""),
                file=sys.stderr,
            )
            return 1
        run_dir = runs.child(found[0])
    doc = json.loads(run_dir.read_text("report.json"))
    for name in ("report.html", "report.md"):
        if run_dir.is_file(name):
            print(f"{name}: {uris.display(run_dir.where(name))}")
    print(report.summary(doc))
    if doc.get("error"):
        print(f"  error: {doc['error']}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import ray

    from pipelines.batch import PredictOutputError, check_output, predict
    from pipelines.cluster import IN_PROCESS

    protect = [_storage(args.storage)]
    try:  # before Ray starts: a refused OUTPUT costs nothing
        check_output(args.input, args.output, args.overwrite, protect)
    except PredictOutputError as e:
        print(f"rayline: {e}", file=sys.stderr)
        return 2
    with capture(_quiet_log(args, "predict"), f"rayline predict {args.model}") as con:
        conn = _ray_init(args.address, con)
        try:
            mv = Registry(_storage(args.storage)).resolve(
                args.model, version=args.version, alias=None if args.version else args.alias
            )
            keys = [k for k in args.keys.split(",") if k]
            result = predict(
                mv.path,
                args.input,
                args.output,
                fmt=args.format,
                keys=keys,
                concurrency=args.concurrency,
                batch_size=args.batch_size,
                overwrite=args.overwrite,
                protect=protect,
            )
        except PredictOutputError as e:
            con.error(f"rayline: {e}")
            return 2
        finally:
            if conn.kind != IN_PROCESS:
                ray.shutdown()
        con.say(
            f"scored {result['rows_in']:,} rows with {mv.model} v{mv.version} -> "
            f"{result['rows_out']:,} rows in {args.output} ({result['seconds']:.1f}s)"
        )
    return 0


def cmd_monitor(args: argparse.Namespace) -> int:
    """``rayline monitor``: 0 when every threshold holds, 2 on a breach, 1 on an error."""
    import ray

    from pipelines import monitor as mon
    from pipelines.cluster import IN_PROCESS
    from pipelines.spec import EvaluationSpec, GateSpec, MonitorSpec

    storage = _storage(args.storage)
    settings, evaluation, gate_spec = MonitorSpec(), EvaluationSpec(), GateSpec()
    if args.overrides and not args.spec:
        print("rayline: KEY=VALUE overrides need --spec", file=sys.stderr)
        return 2
    if args.spec:
        spec = load_spec(args.spec, args.overrides)
        settings, evaluation, gate_spec = spec.monitor, spec.evaluation, spec.registry.gate
    if args.window:
        settings = settings.model_copy(update={"window": args.window})
    req = mon.MonitorRequest(
        storage=storage,
        model=args.model,
        labels=args.labels,
        label=args.label,
        keys=tuple(k for k in args.on.split(",") if k),
        since=mon.parse_time(args.since, "--since"),
        until=mon.parse_time(args.until, "--until"),
        settings=settings,
        evaluation=evaluation,
        gate=gate_spec,
        out=args.out,
        act=args.act,
    )
    with capture(_quiet_log(args, "monitor"), f"rayline monitor {args.model}") as con:
        conn = _ray_init(args.address, con)
        try:
            report = mon.monitor(req, con.say)
            report["actions"] = []
            if req.act:
                report["actions"] = _act(req, report, con.say)
        except (ValueError, FileNotFoundError) as e:
            con.error(f"rayline: {e}")
            return 1
        finally:
            if conn.kind != IN_PROCESS:
                ray.shutdown()
        where = mon.report_location(req)
        paths = mon.write_report(where, report)
        for line in report["breaches"]:
            con.say(f"  breach: {line}")
        con.say(f"report: {paths[1]}")
        con.say(f"        {paths[0]}")
        if report["breaches"]:
            con.say(f"{len(report['breaches'])} threshold(s) breached")
            return 2
        con.say("every threshold holds")
    return 0


def _act(req: Any, report: dict[str, Any], say: Callable[[str], None]) -> list[dict[str, Any]]:
    """``--act``: judge the running canary by monitor.canary, and promote or roll it back."""
    from pipelines import monitor as mon
    from pipelines.deploy import canary_of

    canary = canary_of(req.storage, req.model)
    if canary is None:
        say("  --act: no canary is deployed: nothing to judge")
        return []
    production = int(report["production_version"])
    verdict = mon.judge_canary(report, canary, production, req.settings.canary)
    say(f"  canary v{canary}: {verdict.action} ({verdict.reason})")
    done = mon.act_on_canary(req.storage, req.model, verdict, canary, say)
    return [done] if done else []


def cmd_models(args: argparse.Namespace) -> int:
    from components import bundle, uris

    reg = Registry(_storage(args.storage))
    if args.models_command == "list":
        names = reg.models()
        if not names:
            print(f"no models registered under {uris.display(_storage(args.storage))}/registry")
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
    print(
        f"{mv.model} v{mv.version}  [{', '.join(mv.aliases) or 'no alias'}]  {uris.display(mv.path)}"
    )
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
    commands = ("run", "validate", "deploy", "submit", "monitor")
    if leftover or (extra and args.command not in commands):
        parser.error(f"unrecognized arguments: {' '.join(leftover or extra)}")
    if extra and args.command == "deploy":
        args.options = [*args.options, *extra]
    elif extra:
        args.overrides = [*args.overrides, *extra]
    try:
        if args.command == "validate":
            return cmd_validate(args)
        if args.command == "run":
            return cmd_run(args)
        if args.command == "deploy":
            return cmd_deploy(args)
        if args.command == "predict":
            return cmd_predict(args)
        if args.command in ("promote", "rollback"):
            return cmd_release(args)
        if args.command == "report":
            return cmd_report(args)
        if args.command == "submit":
            return cmd_submit(args)
        if args.command == "monitor":
            return cmd_monitor(args)
        return cmd_models(args)
    except SpecError as e:
        print(f"rayline: {e}", file=sys.stderr)
        return 2
    except (RegistryError, BundleError, PipelineError) as e:
        print(f"rayline: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("rayline: interrupted", file=sys.stderr)
        return 130
