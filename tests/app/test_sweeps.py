"""``convtrain -m`` sweeps: grid, joblib, Optuna (memory / SQLite), submitit and Ray launchers;
a failing job must not stop the others, and the command must say that it failed.

Every job trains one epoch on 200 digits without TensorBoard images, so a job costs ~1 s.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from convtrain.app import cli
from convtrain.app.report import main as report_main
from tests.app import test_cli_errors

in_process = test_cli_errors.convtrain  # the fixture: the CLI in this process, its exit code

TINY = ["trainer.max_epochs=1", "data.subset=200", "logger.tensorboard=false", "logger.png=false",
        "trainer.checkpoint=false"]


def convtrain(cwd: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run([sys.executable, "-m", "convtrain", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def job_dirs(root: Path) -> list[Path]:
    """Job directories (each has .hydra/) of every sweep under ``root``, by job number."""
    dirs = [p.parent.parent for p in root.rglob(".hydra/overrides.yaml")]
    return sorted(dirs, key=lambda d: int(d.name))


def sweep_dir(root: Path) -> Path:
    [multirun_yaml] = root.rglob("multirun.yaml")
    return multirun_yaml.parent


@pytest.mark.slow  # > 2 s: out of the fast suite
def test_grid_sweep_over_a_layer_key_survives_a_failing_job(tmp_path):
    proc = convtrain(tmp_path, "-m", "model.layers.conv1.filters=0,2", "seed=1,2", *TINY)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out  # a job failed
    jobs = job_dirs(tmp_path / "multirun")
    assert len(jobs) == 4, out  # all jobs ran
    failed = [j for j in jobs if (j / "error.txt").is_file()]
    ok = [j for j in jobs if (j / "metrics.json").is_file()]
    assert [j.name for j in failed] == ["0", "1"] and [j.name for j in ok] == ["2", "3"]
    for job in failed:
        assert (job / "error.txt").read_text().strip() == \
            "model.layers.conv1.filters: must be >= 1, got 0"
        assert "model.layers.conv1.filters: must be >= 1, got 0" in \
            (job / "convtrain.log").read_text()
    seen = {(OmegaConf.load(j / ".hydra" / "config.yaml").model.layers.conv1.filters,
             OmegaConf.load(j / ".hydra" / "config.yaml").seed) for j in ok}
    assert seen == {(2, 1), (2, 2)}
    # one summary line naming the failed jobs and their overrides
    [summary] = [line for line in proc.stderr.splitlines() if "jobs failed" in line]
    assert summary.startswith("convtrain: 2 of 4 jobs failed in ")
    assert "job 0 (model.layers.conv1.filters=0 seed=1" in summary
    assert "job 1 (model.layers.conv1.filters=0 seed=2" in summary
    assert "Traceback" not in out

    # the report lists the failed jobs as rows
    root = sweep_dir(tmp_path / "multirun")
    assert report_main([str(root)]) == 0
    rows = (root / "report.md").read_text().splitlines()[2:]
    assert [r.split("|")[2].strip() for r in rows] == ["ok", "ok", "failed", "failed"]
    assert "must be >= 1, got 0" in rows[-1]


@pytest.mark.slow  # > 2 s: out of the fast suite
def test_successful_sweep_exits_zero_and_stale_errors_do_not_count(tmp_path):
    sweep = tmp_path / "sweep"
    proc = convtrain(tmp_path, "-m", "model.layers.conv1.filters=0,2",
                     f"hydra.sweep.dir={sweep}", *TINY)
    assert proc.returncode == 1
    assert (sweep / "0" / "error.txt").is_file()
    # the same directory again (it holds job 1's results: replacing them needs
    # overwrite_run_dir=true), now without mistakes: job 0's old error.txt is cleared
    proc = convtrain(tmp_path, "-m", "model.layers.conv1.filters=1,2",
                     f"hydra.sweep.dir={sweep}", "overwrite_run_dir=true", *TINY)
    assert proc.returncode == 0, proc.stderr
    assert not (sweep / "0" / "error.txt").exists()
    assert "failed" not in proc.stderr


@pytest.mark.slow  # > 2 s: out of the fast suite
def test_joblib_launcher_runs_jobs_in_parallel_processes(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    proc = convtrain(tmp_path, "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                     "model.layers.conv1.filters=0,2,4", *TINY)
    assert "Joblib.Parallel(n_jobs=2" in proc.stdout + proc.stderr
    assert proc.returncode == 1
    jobs = job_dirs(tmp_path / "multirun")
    assert [(j / "metrics.json").is_file() for j in jobs] == [False, True, True]
    assert "must be >= 1" in (jobs[0] / "convtrain.log").read_text()
    assert "1 of 3 jobs failed" in proc.stderr


def optuna_trials(root: Path) -> list[tuple[dict, float]]:
    """(config, returned value) per trial: the value is the best val_accuracy of the job."""
    out = []
    for job in job_dirs(root):
        metrics = json.loads((job / "metrics.json").read_text())
        out.append((OmegaConf.load(job / ".hydra" / "config.yaml"), metrics["best_monitor_value"]))
    return out


@pytest.mark.slow  # > 2 s: out of the fast suite
def test_optuna_sweep_in_memory_maximises_the_returned_value(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    proc = convtrain(tmp_path, "-m", "hparams_search=optuna", "hydra.sweeper.n_trials=3", *TINY)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    trials = optuna_trials(tmp_path / "multirun")
    assert len(trials) == 3
    # the searched keys vary, the fixed ones do not
    assert len({cfg.optimizer.lr for cfg, _ in trials}) == 3
    assert all(cfg.model.layers.conv1.filters in (8, 16, 32) for cfg, _ in trials)
    [results_file] = (tmp_path / "multirun").rglob("optimization_results.yaml")
    results = OmegaConf.load(results_file)
    assert results.best_value == max(value for _, value in trials)


@pytest.mark.slow
def test_optuna_sweep_with_sqlite_storage_resumes_the_study(tmp_path):
    optuna = pytest.importorskip("optuna")
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    for seed in (1, 2):  # a second command adds trials to the same study
        proc = convtrain(tmp_path, "-m", "hparams_search=optuna", "hydra.sweeper.n_trials=2",
                         f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=test",
                         f"hydra.sweeper.sampler.seed={seed}", *TINY)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    study = optuna.load_study(study_name="test", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4
    values = sorted(t.value for t in study.trials)
    returned = sorted(value for _, value in optuna_trials(tmp_path / "multirun"))
    assert values == pytest.approx(returned)


@pytest.mark.slow
def test_optuna_failed_trials_are_reported_and_the_search_goes_on(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    proc = convtrain(tmp_path, "-m", "hparams_search=optuna", "hydra.sweeper.n_trials=3",
                     "model.layers.conv1.filters=choice(0, 2)", "hydra.sweeper.sampler.seed=3",
                     *TINY)
    jobs = job_dirs(tmp_path / "multirun")
    # with this sampler seed the first trial draws 2 filters, the other two draw 0
    assert [(j / "error.txt").is_file() for j in jobs] == [False, True, True]
    assert proc.returncode == 1, proc.stderr
    assert "2 of 3 jobs failed" in proc.stderr and "Traceback" not in proc.stderr
    [results_file] = (tmp_path / "multirun").rglob("optimization_results.yaml")
    assert OmegaConf.load(results_file).best_params["model.layers.conv1.filters"] == 2


@pytest.mark.slow
def test_submitit_local_launcher(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    proc = convtrain(tmp_path, "-m", "hydra/launcher=submitit_local",
                     "hydra.launcher.timeout_min=10", "model.layers.conv1.filters=0,2", *TINY)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    jobs = job_dirs(tmp_path / "multirun")
    assert [(j / "metrics.json").is_file() for j in jobs] == [False, True]
    assert (jobs[0] / "error.txt").read_text().startswith("model.layers.conv1.filters")
    assert list(sweep_dir(tmp_path / "multirun").glob(".submitit/*/*_log.out"))
    assert "1 of 2 jobs failed" in proc.stderr


@pytest.mark.slow
def test_ray_launcher(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher",
                        reason="pip install 'convtrain[ray]' (hydra-ray-launcher + ray) to test")
    proc = convtrain(tmp_path, "-m", "hydra/launcher=ray", "+hydra.launcher.ray.init.num_cpus=2",
                     "model.layers.conv1.filters=0,2", *TINY)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    jobs = job_dirs(tmp_path / "multirun")
    assert [(j / "metrics.json").is_file() for j in jobs] == [False, True]
    assert "1 of 2 jobs failed" in proc.stderr


# --- hydra.sweep.subdir: every job in its own directory inside the sweep directory ---


@pytest.mark.parametrize("subdir, where", [
    ("../x", "would run in {tmp}/x, outside the sweep directory {tmp}/S"),
    ("{tmp}/abs", "would run in {tmp}/abs, outside the sweep directory {tmp}/S"),
    (".", "would run in {tmp}/S, which is the sweep directory {tmp}/S"),
])
def test_a_job_directory_outside_the_sweep_is_refused_before_any_job(in_process, capsys,
                                                                     tmp_path, subdir, where):
    subdir, where = subdir.format(tmp=tmp_path), where.format(tmp=tmp_path)
    assert in_process("-m", "task=summary", "seed=1,2", "hydra.sweep.dir=S",
                      f"hydra.sweep.subdir={subdir}") == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == (
        f"convtrain: error: hydra.sweep.subdir: job 0 (task=summary seed=1) {where}; keep every "
        "job's directory inside hydra.sweep.dir (the default hydra.sweep.subdir=${hydra.job.num} "
        "does)")
    assert "Total params" not in captured.out  # no job ran
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize("subdir, shared", [("same", "same"), ("${optimizer.name}", "sgd")])
def test_two_jobs_in_one_directory_are_refused_before_any_job(in_process, capsys, tmp_path,
                                                              subdir, shared):
    assert in_process("-m", "task=summary", "seed=1,2", "hydra.sweep.dir=S",
                      f"hydra.sweep.subdir={subdir}") == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == (
        f"convtrain: error: hydra.sweep.subdir: job 0 (task=summary seed=1) and job 1 "
        f"(task=summary seed=2) would both run in {tmp_path}/S/{shared}; give each job its own "
        "directory (e.g. hydra.sweep.subdir=${hydra.job.num} or ${hydra.job.override_dirname})")
    assert "Total params" not in captured.out
    assert not (tmp_path / "S").exists()


def test_an_optuna_sweep_with_one_subdir_for_all_trials_is_refused(in_process, capsys, tmp_path):
    assert in_process("-m", "task=summary", "hparams_search=optuna", "hydra.sweep.dir=S",
                      "hydra.sweep.subdir=same") == 2
    assert capsys.readouterr().err.strip().startswith(
        f"convtrain: error: hydra.sweep.subdir: job 0 and job 1 would both run in {tmp_path}/S/same")


@pytest.mark.slow  # > 2 s: out of the fast suite
@pytest.mark.parametrize("subdir", ["${hydra.job.override_dirname}", "job_${seed}"])
def test_a_subdir_that_differs_per_job_is_accepted(in_process, monkeypatch, capsys, tmp_path,
                                                   subdir):
    monkeypatch.setattr(sys, "argv", ["convtrain", "-m", "task=summary", "seed=1,2",
                                      "hydra.sweep.dir=S", f"hydra.sweep.subdir={subdir}"])
    cli.main()  # returns: both jobs ran
    assert capsys.readouterr().out.count("Total params") == 2
