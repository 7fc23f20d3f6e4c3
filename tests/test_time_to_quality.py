"""scripts/time_to_quality.py's bookkeeping (scripts/ttq_targets.py, ttq_compute.py) on tiny made-up curves: seconds
to a target, where it holds from, gaps at the deadline, FLOPs against the peak, the JSON document's shape, the target
tables, the table and the chart; no training."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the file runs
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(ROOT / "scripts"))


ttq = _load("time_to_quality")
targets = _load("ttq_targets")
compute = _load("ttq_compute")
plot = _load("ttq_plot")


def point(t, frechet=None, min_share=None, **more):
    p = {"elapsed_s": t, "step": int(10 * t)}
    if frechet is not None:
        p.update(frechet=frechet, floor=1.0, ratio=frechet)
    if min_share is not None:
        p.update(min_share=min_share, shares=[min_share] * 10)
    p.update(more)
    return p


GAN_REFS = {"gan.frechet": 10.0}


def test_seconds_to_target_is_the_first_point_where_every_condition_holds():
    target = targets.TARGETS["gan"][0]  # FD <= the pretrained GAN's and every digit >= 5%
    curve = [point(40, 30.0, 0.00), point(10, 50.0, 0.0), point(70, 9.0, 0.01), point(100, 9.5, 0.06),
             point(130, 5.0, 0.08)]
    assert targets.seconds_to_target(curve, target, GAN_REFS) == 100  # 70 s: FD met, a digit missing
    assert targets.seconds_to_target(curve[:4], target, {}) is None  # no reference measured: never "met"
    assert targets.seconds_to_target([], target, GAN_REFS) is None


def test_a_relative_threshold_scales_the_reference():
    half = targets.TARGETS["gan"][1]
    assert half.conditions[0].threshold(GAN_REFS) == pytest.approx(5.0)
    assert targets.seconds_to_target([point(100, 6.0, 0.1), point(500, 4.9, 0.1)], half, GAN_REFS) == 500


def test_report_gives_the_gap_at_the_deadline_and_never_calls_a_late_target_met():
    target = targets.TARGETS["vae"][0]  # IWAE <= 100 within 120 s
    curve = [point(30, iwae_nll=120.0), point(110, iwae_nll=103.5), point(150, iwae_nll=99.0)]
    r = targets.target_report(curve, target, {})
    assert r["seconds"] == 150 and r["met"] is False and r["deadline_s"] == 120
    assert r["at_deadline"]["iwae_nll"] == {"threshold": 100.0, "value": 103.5, "gap": pytest.approx(3.5)}
    assert r["measured_until_s"] == 150
    r = targets.target_report(curve[:2] + [point(115, iwae_nll=98.0)], target, {})
    assert r["met"] is True and r["seconds"] == 115 and r["at_deadline"]["iwae_nll"]["gap"] == pytest.approx(-2.0)
    r = targets.target_report([point(150, iwae_nll=99.0)], target, {})  # nothing measured before the deadline
    assert r["at_deadline"]["iwae_nll"]["value"] is None and r["met"] is False


def test_ge_conditions_for_likelihoods():
    target = targets.TARGETS["rbm"][1]  # AIS >= -100 within 300 s
    assert targets.seconds_to_target([point(100, ais_ll=-120.0), point(200, ais_ll=-99.0)], target, {}) == 200
    assert targets.seconds_to_target([point(100, ais_ll=None)], target, {}) is None


def test_the_target_tables_cover_every_model_with_the_issue_deadlines():
    assert set(targets.TARGETS) == {"gan", "vae", "rbm", "ebm"} == set(targets.REFERENCE_RUNS)
    deadlines = {m: [t.deadline_s for t in ts] for m, ts in targets.TARGETS.items()}
    assert deadlines == {"gan": [120, 600], "vae": [120, 900, 900], "rbm": [120, 300, 1800], "ebm": [600]}
    for model_targets in targets.TARGETS.values():
        for t in model_targets:
            for c in t.conditions:
                assert c.op in ("<=", ">=") and (c.value is None) != (c.ref is None), t.name
                if c.ref:  # the issue's yardstick: the models shipped before the lecture recipes, recorded
                    assert c.ref.split(".")[0] in targets.REFERENCE_RUNS and c.ref in targets.BEFORE_LECTURE, c.ref
    for run in targets.REFERENCE_RUNS.values():
        assert (ROOT / "pretrained" / run / "run.json").exists(), run


def make_doc():
    runs = [{"model": "gan", "recipe": "seed", "title": "The seed's settings", "steps": 40,
             "curve": [point(20, 80.0, 0.0), point(120, 40.0, 0.0)]},
            {"model": "gan", "recipe": "lecture", "title": "Lecture: fast and good", "steps": 900,
             "host_mm_gflops": 108.7, "curve": [point(20, 30.0, 0.02), point(60, 9.0, 0.06), point(120, 6.0, 0.07)]}]
    return targets.report(runs, GAN_REFS, {"seconds": 120, "worker_threads": 1})


def test_the_json_document_has_every_run_its_curve_and_its_targets():
    doc = json.loads(json.dumps(make_doc()))  # JSON-able as written
    assert doc["format"] == "genlib-time-to-quality" and doc["version"] == targets.FORMAT_VERSION
    assert doc["references"] == GAN_REFS and doc["settings"]["seconds"] == 120
    assert [(r["model"], r["recipe"]) for r in doc["runs"]] == [("gan", "seed"), ("gan", "lecture")]
    seed, lecture = doc["runs"]
    assert [t["target"] for t in seed["targets"]] == [t.name for t in targets.TARGETS["gan"]]
    assert [t["met"] for t in seed["targets"]] == [False, False]
    assert lecture["targets"][0]["seconds"] == 60 and lecture["targets"][0]["met"] is True
    assert lecture["targets"][1]["seconds"] is None  # 6.0 > half of 10
    for key in ("elapsed_s", "step", "frechet", "floor", "ratio", "min_share", "shares"):
        assert key in lecture["curve"][0]


def test_the_markdown_table_and_the_chart():
    doc = make_doc()
    text = targets.table(doc)
    assert "| gan | lecture | FD <= pretrained GAN's, every digit >= 5% | 120 | 60 | 60 | yes |" in text
    assert "| gan | seed | FD <= pretrained GAN's, every digit >= 5% | 120 | - | - | no | frechet 40 vs 10; " \
           "min_share 0 vs 0.05 | - |" in text
    # the host's speed beside each run's last point; a run recorded before it (or a step's FLOPs) was kept: a dash
    assert "| gan | lecture | 1200 | 120 | 6.00 (6.0x) | 0.070 | - | 109 | - | - | - |" in text
    assert "| gan | seed | 1200 | 120 | 40.00 (40.0x) | 0.000 | - | - | - | - | - |" in text
    png = plot.write_plots(doc, "gan")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    from genlib.images import read_png

    img = read_png(png)
    assert img.shape[1] == 2 * plot.PANEL_W  # two panels for the GAN: the distance and the smallest share


def rbm_run(curve, **more):
    """A 120 s RBM run on a core of 57 GFLOP/s: 10,700 steps of 0.4704 GFLOP (784-500, batch 100, PCD-1)."""
    run = {"model": "rbm", "recipe": "lecture", "steps": 10_700, "train_seconds": 88.0, "budget_s": 120.0,
           "host_mm_gflops": 57.0, "step_flops": 6 * 2 * 100 * 784 * 500, "curve": curve, **more}
    return targets.report([run], {}, {})["runs"][0]


def test_a_target_holds_from_the_first_point_after_which_every_point_holds():
    target = targets.TARGETS["rbm"][0]  # every digit >= 5%: a share judged at 2,000 samples crosses 5% and falls back
    curve = [point(60, 40.0, 0.03), point(100, 30.0, 0.052), point(119, 30.0, 0.045), point(160, 28.0, 0.051),
             point(200, 27.0, 0.06)]
    assert targets.seconds_to_target(curve, target, {}) == 100
    assert targets.holds_from(curve, target, {})["elapsed_s"] == 160
    assert targets.holds_from(curve[:3], target, {}) is None  # the last point misses it
    assert targets.holds_from([], target, {}) is None
    r = targets.target_report(curve, target, {})
    assert (r["seconds"], r["step"], r["holds_from_s"], r["holds_from_step"], r["met"]) == (100, 1000, 160, 1600, True)


def test_a_missed_target_whose_flops_until_it_holds_exceed_its_deadline_at_the_peak_is_out_of_reach():
    run = rbm_run([point(60, 40.0, 0.03, step=5_400), point(119, 30.0, 0.045, step=10_600),
                   point(140, 30.0, 0.052, step=12_000), point(160, 30.0, 0.045, step=13_600),
                   point(200, 27.0, 0.051, step=17_000)])
    cover = run["targets"][0]  # every digit >= 5% within 120 s: crossed once at 140 s, holds from 200 s
    assert cover["met"] is False and cover["step"] == 12_000 and cover["holds_from_step"] == 17_000
    c = cover["compute"]
    assert c["basis"] == "holds" and c["step"] == 17_000 and c["flops"] == pytest.approx(17_000 * 0.4704e9)
    assert c["seconds_at_peak"] == pytest.approx(140.3, abs=0.1) and c["fits_deadline"] is False
    assert c["deadline_flops_at_peak"] == pytest.approx(120 * 57e9)
    assert compute.why(run, cover) == ("holds from step 17,000: 8.0 TFLOP = 140 s at 57 GFLOP/s (> 120 s: out of "
                                   "reach on this core)")
    whole = run["compute"]  # the steps' own rate, and the share of the core's peak over the run's 120 s
    assert whole["steps_gflops"] == pytest.approx(10_700 * 0.4704 / 88.0)
    assert whole["share_of_peak"] == pytest.approx(10_700 * 0.4704 / (120 * 57.0))
    text = targets.table({"runs": [run]})
    assert "| rbm | lecture | every digit >= 5% (no collapse) | 120 | 140 | 200 | no |" in text
    assert "| 57 | 0.47 | 57 | 74% |" in text  # the steps ran at the peak; start-up and side tasks took 26%


def test_a_met_target_counts_to_its_first_reach_a_late_one_within_its_flops_and_one_that_does_not_hold():
    crossed = rbm_run([point(100, 30.0, 0.052, step=9_000), point(119, 30.0, 0.045, step=10_600)])
    t = crossed["targets"][0]  # met at 100 s, though it does not hold at the end: the verdict's own steps
    assert t["met"] and t["holds_from_step"] is None and t["compute"]["basis"] == "reached"
    assert compute.why(crossed, t) == "reached at step 9,000: 4.2 TFLOP = 74 s at 57 GFLOP/s"
    late = rbm_run([point(130, 30.0, 0.052, step=12_000)])
    assert late["targets"][0]["compute"]["fits_deadline"] is True and not late["targets"][0]["met"]
    assert compute.why(late, late["targets"][0]).endswith("(within 120 s at the peak: late by the run's other work)")
    # never held at the end: a lower bound, conclusive only once it exceeds the deadline at the peak
    short = rbm_run([point(110, 30.0, 0.04, step=10_000)])
    c = short["targets"][0]["compute"]
    assert (c["basis"], c["step"], c["fits_deadline"]) == ("last", 10_000, None)
    assert compute.why(short, short["targets"][0]) == ("not at step 10,000, the last: more than 4.7 TFLOP = 83 s at "
                                                   "57 GFLOP/s")
    long = rbm_run([point(300, 30.0, 0.04, step=21_000)])["targets"][0]["compute"]
    assert (long["basis"], long["fits_deadline"]) == ("last", False)
    # a target this run's curve cannot judge (the seed's Gaussian VAE has no comparable IWAE figure): no bound
    unjudged = rbm_run([point(100, 30.0, None, step=9_000)])["targets"][0]
    assert unjudged["last_step"] is None and unjudged["compute"] is None
    # runs recorded before the host's speed or the step's FLOPs were kept: no figures, a dash
    old = rbm_run([point(100, 30.0, 0.052, step=9_000)], host_mm_gflops=None)
    assert old["compute"] is None and old["targets"][0]["compute"] is None and compute.why(old, old["targets"][0]) == "-"


def test_a_recipes_step_flops_come_from_its_recorded_configs():
    """What --evaluate-only counts for a run trained before the figure was kept: its trained.json configs."""
    import types

    import torch

    data = types.SimpleNamespace(x_train=torch.randint(0, 256, (300, 1, 28, 28), dtype=torch.uint8))
    r = ttq.parse_recipe("rbm", "lecture")
    # the reference step's dense products, whatever the fused step sums as rows: five of 100 rows, 32 reconstructions
    assert compute.step_flops("rbm", r.model_values(), r.train_values(), data) == 2 * 784 * 500 * (5 * 100 + 32)
    small = ttq.parse_recipe("rbm", "lecture:n_hidden=50:batch_size=10")
    assert compute.step_flops("rbm", small.model_values(), small.train_values(), data) == 6 * 2 * 10 * 784 * 50


def test_recipe_variants_to_try_set_model_and_train_fields_and_refuse_bad_ones():
    r = ttq.parse_recipe("vae", "lecture:latent=32:lr=0.003:decoder=gaussian")
    assert r.name == "lecture:latent=32:lr=0.003:decoder=gaussian" and r.title == r.name
    assert (r.model_values()["latent"], r.model_values()["decoder"], r.train_values()["lr"]) == (32, "gaussian", 0.003)
    assert ttq.parse_recipe("gan", "seed").title == "The seed's settings"
    for bad in ("lecture:latent=99", "lecture:latent", "lecture:colour=3", "fastest"):
        with pytest.raises(ValueError):
            ttq.parse_recipe("vae", bad)
    assert ttq._folder("vae", "lecture:lr=0.003") == "vae-lecture_lr_0.003"


def test_the_rbm_point_holds_each_independent_ais_run_their_mean_and_spread():
    import argparse

    import torch

    from genlib.data import load_dataset
    from genlib.models import build_model

    torch.manual_seed(0)
    model = build_model("rbm", {"n_hidden": 16}).eval()
    data = load_dataset("digits")
    args = argparse.Namespace(ais_steps=50, ais_chains=8, n_test=64, ais_repeats=3)
    point = ttq.likelihood("rbm", model, data, args)
    runs = point["ais_ll_runs"]
    assert len(runs) == 3 and len(set(runs)) == 3  # three runs of their own chains, not one repeated
    assert point["ais_ll"] == pytest.approx(sum(runs) / 3)
    assert point["ais_ll_spread"] == pytest.approx(max(runs) - min(runs)) and point["ais_ll_spread"] > 0
    one = ttq.likelihood("rbm", model, data, argparse.Namespace(**{**vars(args), "ais_repeats": 1}))
    assert one["ais_ll_runs"] == runs[:1]  # the first run is the single run's estimate: the same seed


def test_snapshots_are_picked_every_so_many_seconds_or_at_the_deadlines():
    names = [f"{t:08.2f}.safetensors" for t in (5.0, 31.0, 64.0, 95.5, 118.0, 151.0, 299.0, 330.0)]
    every = ttq.snapshots_to_evaluate(names, 60.0)
    assert [t for t, _ in every] == [5.0, 95.5, 299.0, 330.0]  # >= 60 s apart, and the last
    at = ttq.snapshots_to_evaluate(names, 60.0, [120, 300, 1800])
    assert [t for t, _ in at] == [118.0, 299.0, 330.0]  # the last copy by each deadline (1800: the last one)
    assert at[0][1] == "00118.00.safetensors"
    assert ttq.snapshots_to_evaluate(names, 60.0, [1.0]) == [(330.0, "00330.00.safetensors")]  # none by 1 s
    assert ttq.snapshots_to_evaluate([], 60.0, [120]) == []


def test_an_evaluation_records_the_clock_its_runs_trained_with_not_its_own_defaults():
    import argparse

    trained = argparse.Namespace(evaluate_only=False, seconds=600.0, snapshot_every=30.0)
    assert ttq.training_settings([], trained) == {"seconds": 600.0, "snapshot_every_s": 30.0}
    later = argparse.Namespace(evaluate_only=True, seconds=120.0, snapshot_every=5.0)  # the unused defaults
    runs = [{"budget_s": 3000.0, "train_config": {"snapshot_every_s": 60.0}},
            {"budget_s": 3000.0, "train_config": {"snapshot_every_s": 60.0}}]
    assert ttq.training_settings(runs, later) == {"seconds": 3000.0, "snapshot_every_s": 60.0}
    mixed = [runs[0], {"budget_s": 300.0, "train_config": {"snapshot_every_s": 60.0}}]
    assert ttq.training_settings(mixed, later) == {"seconds": [300.0, 3000.0], "snapshot_every_s": 60.0}
    old = [{"train_config": {}}]  # a record from before budget_s was kept: unknown, not 120
    assert ttq.training_settings(old, later) == {"seconds": None, "snapshot_every_s": None}


def test_the_weight_average_study_copies_the_live_weights_and_each_average_of_one_run():
    import torch

    from genlib.data import load_dataset

    study = _load("weight_average_study")
    torch.manual_seed(0)
    copies = study.train_and_copy("vae", "lecture:hidden=16:latent=2", [0.2, 0.5], [0.9, 0.99],
                                  load_dataset("digits"))
    assert [c["seconds"] for c in copies] == [0.2, 0.5] and copies[0]["step"] < copies[1]["step"]
    for c in copies:
        assert set(c["weights"]) == {"live", "ema 0.9", "ema 0.99"}
        live, avg = c["weights"]["live"], c["weights"]["ema 0.9"]
        assert live.keys() == avg.keys()
        assert any(not torch.equal(live[k], avg[k]) for k in live)  # an average, not a second copy of the weights


def test_the_host_speed_is_a_positive_rate_and_leaves_the_thread_count_as_it_was():
    import torch

    threads = torch.get_num_threads()
    assert ttq.host_gflops(size=128, reps=2) > 0.1 and torch.get_num_threads() == threads


def test_the_sampler_study_changes_only_the_step_count_and_reports_each_seed(tmp_path):
    import torch

    from genlib.models import build_model
    from genlib.runs.checkpoints import load_checkpoint, save_checkpoint

    steps_study = _load("sampler_steps")
    torch.manual_seed(0)
    ebm = build_model("ebm", {"channels": (4, 4, 8, 8), "hidden": 8, "langevin_steps": 3, "buffer_size": 16,
                              "sample_steps": 3})
    save_checkpoint(tmp_path / "ebm.safetensors", ebm, train_config={}, progress={"step": 7})
    ckpt = steps_study.load_weights(tmp_path / "ebm.safetensors")
    one, five = steps_study.with_steps(ckpt, 1), steps_study.with_steps(ckpt, 5)
    assert (one.config.sample_steps, five.config.sample_steps) == (1, 5)
    for k, v in ebm.state_dict().items():  # the same weights, only the sampler's length differs
        assert torch.equal(one.state_dict()[k], v) and torch.equal(five.state_dict()[k], v)
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    assert not torch.equal(one.sample(4, generator=g()), five.sample(4, generator=g()))

    class Judge:  # shares that depend on the model's steps and the seed, so the rows show which is which
        def samples(self, model, seed=0):
            n = model.config.sample_steps
            return {"frechet": 10.0 * n + seed, "floor": 1.0, "shares": [0.01 * n + 0.01 * seed] + [0.1] * 9}

    rows = steps_study.study(ckpt, [1, 5], [0, 2], Judge())
    assert [r["steps"] for r in rows] == [1, 5] and all(r["grid_seconds"] > 0 for r in rows)
    assert rows[1]["seeds"][2]["frechet"] == 52.0 and rows[0]["seeds"][0]["shares"][0] == 0.01
    text = steps_study.table(rows)
    # seed 2's smallest share is 2 points above seed 0's; pooled, the two seeds' samples give their mean
    assert "| 1 | 10.0 / 12.0 | 1.0% (0s) / 3.0% (0s) | 2.0% (0s) |" in text
    assert "| 5 | 50.0 / 52.0 | 5.0% (0s) / 7.0% (0s) | 6.0% (0s) |" in text

    vae = build_model("vae", {"hidden": 16, "latent": 2})
    save_checkpoint(tmp_path / "vae.safetensors", vae, train_config={}, progress={"step": 1})
    with pytest.raises(ValueError, match="no sample_steps"):
        steps_study.with_steps(load_checkpoint(tmp_path / "vae.safetensors"), 5)
