"""Walk a validated spec through the stages: prepare, features, train, select, evaluate,
register, serve (pipelines/stages/, one module each).

Each step prints a line when it starts and when it ends, with its elapsed time. The run leaves
``<storage>/runs/<pipeline>/<run_id>/`` (pipelines.run_dir: the resolved spec, quarantined
rows, Ray Train checkpoints, the bundle, report.md/json/html) and a new version in the registry.
With ``resume``, a stage whose inputs are unchanged since an interrupted run is reused
(pipelines.resume), not run again.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from components import uris
from components.registry import ModelVersion
from pipelines import columns, report, tracking
from pipelines import resume as resume_mod
from pipelines.errors import PipelineError
from pipelines.run_dir import RunDir, new_run_id, runs_of
from pipelines.run_report import RunReport
from pipelines.spec import PipelineSpec
from pipelines.stages import evaluate, features, prepare, register, select, serve, train
from pipelines.stages.common import Printer, RunContext, ray_split_scorer
from pipelines.timer import StepTimer


@dataclass
class Results:
    """The stages' results so far (a failed run reports what finished)."""

    prepared: prepare.Prepared | None = None
    features: features.Features | None = None
    candidates: list[train.Candidate] = field(default_factory=list)
    selection: select.Selection | None = None
    evaluation: evaluate.Evaluation | None = None
    registration: register.Registration | None = None
    endpoint: dict[str, Any] | None = None
    tune_failed: train.TuneFailed | None = None


class Runner:
    """Runs one pipeline spec on the connected Ray cluster."""

    def __init__(
        self,
        spec: PipelineSpec,
        out: Printer = print,
        run_id: str | None = None,
        storage: str | None = None,
        resume: bool = False,
    ) -> None:
        # Feature selectors become the data's columns here: every stage, the run's spec.yaml
        # and the bundle's schema use the full lists.
        self.spec = spec = columns.resolved(spec)
        self.out = out
        self.storage = spec.storage_location(storage)
        self.resume = resume_mod.Resume(resume)
        previous = (
            resume_mod.unfinished_run(runs_of(self.storage, spec.name))
            if resume and run_id is None
            else None
        )
        self.run_id = run_id or (uris.basename(previous) if previous else new_run_id())
        self.paths = RunDir(self.storage, spec.name, self.run_id)
        self.run_dir = self.paths.root
        self.ctx = RunContext(spec, self.paths, out)
        self.results = Results()

    def run(self, notes: Sequence[str] = ()) -> dict[str, Any]:
        """Every stage in order; the run's report (also written as report.json/md/html).
        ``notes``: lines printed under the run's header (e.g. which Ray it uses)."""
        from components.steps import errors

        self._start(notes)
        timer = StepTimer(self.out, total=7 if self.spec.serve.enabled else 6)
        started = time.time()
        try:
            self._stages(timer)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: stop, resumable with --resume
            doc = self._report("interrupted", timer, error="interrupted (SIGINT or SIGTERM)")
            report.write(self.run_dir, doc.to_dict())
            raise
        except Exception as e:
            user = errors.find_user_error(e)
            if isinstance(e, train.TuneFailed):
                self.results.tune_failed = e
            doc = self._report("failed", timer, error=str(user or e))
            report.write(self.run_dir, doc.to_dict())
            if user is not None:
                raise PipelineError(str(user)) from None
            raise
        doc = self._report("succeeded", timer, seconds=round(time.time() - started, 1))
        paths = report.write(self.run_dir, doc.to_dict())
        reg = self.results.registration
        if self.spec.tracking.mlflow_uri and reg is not None:
            doc.tracking = tracking.track(
                self.spec,
                doc.to_dict(),
                reg.version.path,
                reg.version.version,
                reg.promoted,
                self.out,
            )
            paths = report.write(self.run_dir, doc.to_dict())
        self.out(report.summary(doc.to_dict()))
        self.out(f"  report: {paths[0]}  (html: {paths[0][:-2]}html)")
        return doc.to_dict()

    def _stages(self, timer: StepTimer) -> None:
        """The recipe: each stage in order, its result kept in ``self.results``."""
        ctx, res, spec = self.ctx, self.results, self.spec
        score = ray_split_scorer(spec)
        prep = prepare.reusable(ctx, prepare.input_key(ctx))
        stored = self.resume.stored(prep)
        if stored is not None:
            with timer.step("ingest", "reusing the ingested, split data of this run"):
                res.prepared = self.resume.reuse(prep, stored)
            timer.skip("split", "reused with the ingested data")
        else:
            with timer.step("ingest", "reading and validating with Ray Data"):
                ingested = prepare.ingest(ctx)
            with timer.step("split", f"{spec.split.method} split"):
                res.prepared = self.resume.run(prep, lambda: prepare.split(ctx, ingested))
            # the ingested rows are in the splits now: release the object store's copy
            del ingested
        prepared = res.prepared

        feat = features.reusable(ctx, features.input_key(ctx, prep.key))
        stored = self.resume.stored(feat)
        if stored is not None:
            with timer.step("features", "reusing the fitted feature transform"):
                res.features = fitted = self.resume.reuse(feat, stored)
        else:
            with timer.step("features", "fitting the feature transform on the training split"):
                res.features = fitted = self.resume.run(
                    feat, lambda: features.fit(ctx, prepared, feat.key)
                )

        with timer.step("train", f"{len(spec.models)} model(s) on Ray Train"):
            tctx = train.context(ctx, prepared, fitted)
            for i, m in enumerate(spec.models):
                r = train.reusable(ctx, i, m, train.candidate_key(ctx, fitted, m))
                res.candidates.append(
                    self.resume.run(
                        r,
                        lambda i=i, m=m: train.train_candidate(  # type: ignore[misc]
                            ctx, i, m, tctx, prepared, fitted, score, self.resume.enabled
                        ),
                    )
                )

        with timer.step("evaluate", "scoring the whole test split with the winner's bundle"):
            res.selection = select.select(ctx, res.candidates, prepared, fitted, tctx, score)
            res.evaluation = evaluate.evaluate(ctx, res.selection, prepared, tctx.label_mean, score)

        with timer.step("register", f"publishing to the registry as {spec.model_name()!r}"):
            res.registration = register.register(
                ctx,
                self.storage,
                res.selection,
                res.evaluation,
                prepared,
                fitted,
                _ray_job_id(),
            )

        if spec.serve.enabled:
            res.endpoint = serve.serve_production(
                ctx, self.storage, res.registration.version, timer
            )

    def _start(self, notes: Sequence[str] = ()) -> None:
        self.paths.store.write_text(
            "spec.yaml", yaml.safe_dump(self.spec.model_dump(mode="json"), sort_keys=False)
        )
        self.out(
            f"rayline run {self.spec.name} ({self.spec.task}), run {self.run_id}\n"
            f"  run dir: {uris.display(self.run_dir)}"
        )
        for line in notes:
            self.out(line)
        if self.resume.enabled:
            resumed = self.paths.store.exists("prepared")
            self.out(
                "  resuming this unfinished run: finished steps with unchanged inputs are reused"
                if resumed
                else "  --resume: no unfinished run of this pipeline; starting a new one"
            )

    def _report(self, status: str, timer: StepTimer, **extra: Any) -> RunReport:
        """The run report from the stages' results so far."""
        res, spec = self.results, self.spec
        doc = RunReport(
            pipeline=spec.name,
            run_id=self.run_id,
            task=spec.task,
            label=spec.data.label,
            run_dir=self.run_dir,
            status=status,
        )
        if res.prepared is not None:
            doc.data = res.prepared.data.to_dict()
            doc.splits = res.prepared.summary
        if res.features is not None:
            doc.features = res.features.summary
        tuning = {c.spec.name: c.tuning for c in res.candidates if c.tuning}
        if res.tune_failed is not None:
            tuning[res.tune_failed.model] = res.tune_failed.tuning
        doc.tuning = tuning or None
        if res.selection is not None:
            doc.baseline_gate = res.selection.baseline_gate
            doc.final_model = res.selection.final_model
        if res.evaluation is not None:
            ev = res.evaluation
            doc.test_without_guardrails, doc.guardrails = ev.test_without_guardrails, ev.guardrails
            doc.models = [c.summary for c in res.candidates]
            doc.winner = res.selection.winner.name if res.selection else None
            doc.selection_metric = spec.selection_metric()
            doc.test, doc.baseline, doc.predictions = ev.test, ev.baseline, ev.predictions
            doc.metric_conventions = register.metric_conventions(self.ctx) or None
        if res.registration is not None:
            doc.gate, doc.lineage = res.registration.gate, res.registration.lineage
        doc.endpoint = res.endpoint
        doc.error = extra.get("error")
        doc.step_seconds = timer.times
        if status == "succeeded":
            doc.reused = list(self.resume.reused)
            doc.seconds = extra.get("seconds")
            doc.model = _model_entry(spec.model_name(), res.registration)
        return doc


def _model_entry(name: str, reg: register.Registration | None) -> dict[str, Any] | None:
    if reg is None:
        return None
    v: ModelVersion = reg.version
    return {"name": name, "version": v.version, "path": v.path, "aliases": list(v.aliases)}


def _ray_job_id() -> str | None:
    import ray

    return ray.get_runtime_context().get_job_id()
