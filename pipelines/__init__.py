"""The MLflow project's entry points: one thin click command per step, and the orchestrator.

Each step module (``simulate``, ``annotate``, ``import_labels``, ``train``, ``tune``, ``register``,
``export``) exposes

* a function ``run(*, run_id, **params) -> dict[str, str]`` that does the step inside an existing
  MLflow run (the one ``mlflow run`` created, or one that :mod:`pipelines.main` created for the
  in-process mode) and returns its outputs (artifact URIs, registered versions), which it also
  records as ``coreg.out.*`` tags of the run;
* a click command ``cli`` (``python -m pipelines.<step> --help``), which the ``MLproject`` entry
  point of the same name runs.

:mod:`pipelines.main` chains the steps and reuses finished ones (MLflow's multistep-workflow
pattern); :mod:`pipelines.demo` runs it offline on the embedded digits data.
"""
