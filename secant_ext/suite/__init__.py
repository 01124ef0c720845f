"""The workload suite: every optimizer at its defaults against a calibrated AdamW and the
learning-rate-free peers, scored the way MLCommons AlgoPerf scores (time to a validation
target on every workload, summarised by a performance profile).

``python -m secant_ext suite --list`` names the workloads; ``python -m secant_ext suite``
runs them. One file per purpose:

- ``tasks``: the models, data and metrics the workloads are built from;
- ``workloads``: each workload declared once (model, data, loss, metric, budget);
- ``methods``: the calibrated ceiling, the fixed configurations, the peers, the Secant
  optimizers;
- ``runner``: one (workload, method, seed) run on the workload's own batches;
- ``scoring``: targets, time to target, performance profiles;
- ``report``: tables, plots and the results files;
- ``cli``: the command line.
"""
