"""genlib.work_budget: what one session may ask of the server is capped by work (FLOPs, frames, bytes). Each cap is
checked where the work is done: a crafted link or a huge model hits it, the page says so, and the work counted with
the cost functions stays within the cap. Disk retention (per-epoch grids, the Monte Carlo cache) and the memory
budget's Ising dataset are here too."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
import torch
from streamlit.testing.v1 import AppTest

import genlib.work_budget as wb
from genlib.models import build_model
from genlib.runs.checkpoints import save_checkpoint
from genlib.runs.store import RunStore

TIMEOUT = 90


# ---- the plans, with the real caps ----

def test_a_4096_by_4096_rbm_chain_is_capped_and_the_default_models_are_not():
    big = wb.plan_chains(wb.gibbs_step_flops(4096, 4096), 16, 1000)
    assert big.capped and big.flops <= wb.CAPS.chain_flops
    assert big.steps % max(1, big.steps // 200) == 0  # ends on a recorded frame
    assert "Capped" in big.note and "1.1 TFLOP" in big.note
    mnist = wb.plan_chains(wb.gibbs_step_flops(784, 512), 16, 1000)  # the largest setting of a usual RBM
    assert not mnist.capped and (mnist.chains, mnist.steps) == (16, 1000)


def test_the_default_ebm_at_its_largest_setting_fits_and_a_wide_one_does_not():
    forward = {}
    for name, channels in (("default", (16, 32, 64, 64)), ("wide", (512, 512, 512, 512))):
        model = build_model("ebm", {"channels": channels})
        forward[name] = wb.forward_flops(model.energy, torch.zeros(1, 1, 28, 28))
    assert 1e6 < forward["default"] < 1e7 < forward["wide"]  # counted by PyTorch: ~1.7 MFLOP, ~400 MFLOP
    default = wb.plan_chains(wb.langevin_step_flops(forward["default"]) + forward["default"], 8, 1000)
    assert not default.capped
    wide = wb.plan_chains(wb.langevin_step_flops(forward["wide"]) + forward["wide"], 8, 1000)
    assert wide.capped and wide.flops <= wb.CAPS.chain_flops


def test_ising_sampling_has_no_floor_of_100_chains_any_more():
    """Today's page sampled at least 100 chains whatever the RBM: 100 x 300 steps of a 4,096 x 4,096 RBM is 2 TFLOP."""
    small = wb.plan_ising(64, 256, 1000, 300)  # the README's L = 8 recipe: all 1,000 chains
    assert (small.chains, small.note) == (1000, "")
    mid = wb.plan_ising(1024, 256, 1000, 300)  # L = 32
    assert wb.CAPS.ising_min_chains <= mid.chains < 1000 and mid.flops <= wb.CAPS.ising_flops and mid.note
    big = wb.plan_ising(4096, 4096, 1000, 300)  # L = 64, 4,096 hidden units
    assert big.chains == 0 and big.flops == 0 and "too large" in big.note


def test_the_in_browser_decoder_of_a_4096_rbm_is_not_sent():
    assert wb.decoder_payload_bytes([(4096, 4096)]) > 85 * 2**20  # ~89 MB of base64 to every session, today
    fits, note = wb.decoder_fits([(4096, 4096)])
    assert not fits and "85.4 MB" in note
    assert wb.decoder_fits([(512, 784)])[0]  # a usual RBM's p(v|h)
    assert wb.decoder_fits([(2, 512), (512, 784)])[0]  # a usual VAE's decoder


def test_an_animation_of_many_epochs_keeps_the_ends_and_stays_within_frames_and_pixels():
    idx, note = wb.gif_frames(2000, 480, 480)
    assert idx[0] == 0 and idx[-1] == 1999 and len(idx) <= wb.CAPS.gif_frames and note
    assert wb.gif_pixels(len(idx), 480, 480) <= wb.CAPS.gif_pixels
    idx, _ = wb.gif_frames(30, 2000, 2000)  # large frames: fewer of them
    assert wb.gif_pixels(len(idx), 2000, 2000) <= wb.CAPS.gif_pixels or len(idx) == 2
    assert wb.gif_frames(10, 480, 480) == (list(range(10)), "")



def test_every_gif_is_encoded_within_the_caps_reading_only_the_frames_it_shows(monkeypatch):
    from PIL import Image

    from genlib.images import gif_bytes

    monkeypatch.setattr(wb, "CAPS", wb.Caps(gif_frames=5))
    read = []

    def frame(i):  # frame i: a 10 x 12 image of grey value 2 i, so the decoded GIF says which frames it holds
        read.append(i)
        return np.full((10, 12), 2 * i, dtype=np.uint8)

    data, note = gif_bytes(40, frame, width=40, duration_ms=80)
    gif = Image.open(io.BytesIO(data))
    shown = []
    for k in range(gif.n_frames):
        gif.seek(k)
        shown.append(int(np.asarray(gif.convert("L"))[0, 0]) // 2)
    assert gif.size == (36, 30)  # upscaled 3x: the largest factor within 40 px
    assert shown == sorted(set(read)) and len(shown) == 5 and shown[0] == 0 and shown[-1] == 39
    assert "Showing 5 of the 40 frames" in note
    data, note = gif_bytes(40, frame, max_frames=8)  # a page's own, larger frame cap; twice the size
    gif = Image.open(io.BytesIO(data))
    assert gif.n_frames == 8 and gif.size == (24, 20) and note
    monkeypatch.setattr(wb, "CAPS", wb.Caps(gif_pixels=3 * 24 * 20))  # the pixel cap binds every page's animation
    assert Image.open(io.BytesIO(gif_bytes(40, frame, max_frames=8)[0])).n_frames == 3
    with pytest.raises(ValueError, match="at least one frame"):
        gif_bytes(0, frame)


# ---- disk retention ----

def test_epoch_thinning_is_bounded_stable_and_keeps_the_ends():
    kept: set[int] = set()
    for epoch in range(1, 2001):  # as a run of 2,000 epochs writes them
        kept.add(epoch)
        kept -= set(wb.thin_epochs(sorted(kept), 100))
        assert len(kept) <= 100 and 1 in kept and epoch in kept
    # evenly spread over the run: the largest gap is at most twice the smallest spacing
    gaps = [b - a for a, b in zip(sorted(kept), sorted(kept)[1:])]
    assert max(gaps) <= 2 * min(g for g in gaps if g > 1) + 1


def test_a_run_of_many_epochs_keeps_at_most_the_cap_of_grids(tmp_path, monkeypatch):
    monkeypatch.setattr(wb, "CAPS", wb.Caps(epoch_grids=20))
    run = RunStore(tmp_path).create({"model": "vae", "model_config": {"hidden": 32, "latent": 2},
                                     "dataset": "digits", "train_config": {"dataset": "digits"}})
    for epoch in range(1, 301):
        run.write_epoch_grid(epoch, b"\x89PNG fake")
    epochs = sorted(int(p.stem[6:]) for p in run.epoch_grids())
    assert len(epochs) <= 20 and epochs[0] == 1 and epochs[-1] == 300


def test_the_monte_carlo_cache_drops_the_least_recently_used_beyond_its_cap(tmp_path):
    from genlib.ising import dataset

    folder = tmp_path / dataset.NAME
    folder.mkdir()
    for i in range(5):  # five cached temperatures of 1 MB, used one after the other
        f = folder / f"L8-T{i}-n10-seed0.npz"
        f.write_bytes(b"\0" * 2**20)
        f.with_suffix(".json").write_text("{}")
        os.utime(f, (1000 + i, 1000 + i))
    os.utime(folder / "L8-T0-n10-seed0.npz", (2000, 2000))  # T0 read again last
    gone = dataset.evict(tmp_path, keep=folder / "L8-T1-n10-seed0.npz", cap=int(2.5 * 2**20))
    left = sorted(p.name for p in folder.glob("*.npz"))
    assert left == ["L8-T0-n10-seed0.npz", "L8-T1-n10-seed0.npz"]  # the newest use and the protected one
    assert {p.name for p in gone} == {"L8-T2-n10-seed0.npz", "L8-T3-n10-seed0.npz", "L8-T4-n10-seed0.npz"}
    assert not (folder / "L8-T2-n10-seed0.json").exists()  # its report went with it


def test_sampling_new_temperatures_keeps_the_cache_within_its_cap(tmp_path, monkeypatch):
    from genlib.ising import dataset

    dataset.load_temperature(tmp_path, 4, 2.0, 10, 0)
    one = next((tmp_path / dataset.NAME).glob("*.npz")).stat().st_size
    monkeypatch.setattr(wb, "CAPS", wb.Caps(ising_cache_bytes=int(2.5 * one)))
    for T in (2.5, 3.0, 3.5, 4.0):
        dataset.load_temperature(tmp_path, 4, T, 10, 0)
        files = list((tmp_path / dataset.NAME).glob("*.npz"))
        assert sum(f.stat().st_size for f in files) <= wb.CAPS.ising_cache_bytes + one  # within a file's rounding
        assert dataset.cache_path(tmp_path, 4, T, 10, 0).exists()  # the one just sampled stays
    spins, _ = dataset.load_temperature(tmp_path, 4, 2.0, 10, 0)  # evicted: sampled again, same seed, same data
    assert spins.shape == (11, 4, 4)


# ---- the memory budget counts the Ising dataset ----

def test_the_memory_budget_counts_the_ising_dataset_and_refuses_one_that_cannot_fit():
    from genlib.jobs.budget import check_fits, dataset_bytes, estimate

    rbm = {"image_shape": (1, 64, 64), "n_hidden": 256}
    small = estimate("rbm", rbm, batch_size=500, dataset="ising:L=64,T=2.27,n=1000")
    assert small.data_bytes == dataset_bytes("ising:L=64,T=2.27,n=1000", 4096) >= 2 * 1100 * 64 * 64
    huge = "ising:L=64,T=" + "/".join(f"{1.5 + 0.1 * i:.1f}" for i in range(16)) + ",n=1000000"
    with pytest.raises(ValueError, match="Ising configurations"):  # 16 x 1.1 M lattices of 4,096 spins: >140 GB
        check_fits("rbm", rbm, batch_size=500, dataset=huge, available=64 * 2**30)
    check_fits("rbm", rbm, batch_size=500, dataset="ising:L=64,T=2.27,n=1000", available=64 * 2**30)


def test_a_huge_ising_sweep_is_refused_before_a_run_folder_is_made(tmp_path):
    from genlib.ising.compare import SweepPlan
    from genlib.jobs.manager import JobManager

    mgr = JobManager(RunStore(tmp_path / "runs"), backend="thread", max_jobs=1)
    try:
        job = SweepPlan(sweep_id="s", L=64, temperatures=(2.0,), n=1_000_000, n_hidden=4096).jobs()[0]
        import genlib.jobs.budget as budget

        original = budget.free_bytes
        budget.free_bytes = lambda device="cpu": 16 * 2**30  # a 16 GB machine
        try:
            with pytest.raises(ValueError, match="needs about"):
                mgr.submit(**job)
        finally:
            budget.free_bytes = original
        assert not any((tmp_path / "runs").iterdir()) if (tmp_path / "runs").exists() else True
    finally:
        mgr.close(stop_jobs=True, timeout=30)


# ---- pages: a crafted link or a huge model meets the cap, says so, and the work stays within it ----

def _app(model_name, run_id):
    from dashboard.explore.panel import render
    from genlib.runs.store import RunStore

    render(model_name, RunStore().get(run_id) if run_id else None)


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("GENLIB_RUNS_DIR", str(tmp_path))
    monkeypatch.setenv("GENLIB_DATA_ROOT", str(tmp_path / "no-data"))
    st.cache_resource.clear()
    st.cache_data.clear()
    yield tmp_path
    st.cache_resource.clear()
    st.cache_data.clear()


def _save_run(runs_dir, name, config):
    torch.manual_seed(0)
    model = build_model(name, config)
    run = RunStore(runs_dir).create({"model": name, "model_config": model.config_dict(), "dataset": "digits",
                                     "train_config": {"dataset": "digits"}})
    save_checkpoint(run.snapshot_path, model, train_config={"dataset": "digits"}, progress={"step": 0})
    return run


def _open(name, run, **params):
    at = AppTest.from_function(_app, args=(name, run.id), default_timeout=TIMEOUT)
    for k, v in params.items():
        at.query_params[k] = v
    return at.run()


def _texts(at) -> str:
    return " ".join(str(e.value) for e in list(at.info) + list(at.caption))


def test_a_crafted_gibbs_chain_link_meets_the_cap_and_the_gibbs_work_stays_within_it(runs_dir, monkeypatch):
    import dashboard.explore.rbm as page

    monkeypatch.setattr(wb, "CAPS", wb.Caps(chain_flops=1e8))  # a small cap, so the test runs fast
    done = []
    real = page.gibbs_chain

    def counted(model, v0, steps, **kw):
        done.append(wb.gibbs_step_flops(model.n_visible, model.latent_dim) * v0.shape[0] * steps)
        return real(model, v0, steps, **kw)

    monkeypatch.setattr(page, "gibbs_chain", counted)
    run = _save_run(runs_dir, "rbm", {"n_hidden": 64})
    # the most a link can ask: 16 chains of 1,000 steps (3.2 GFLOP here, 32 times the cap)
    at = _open("rbm", run, **{"rbm-tab": "Gibbs chain", f"rbm-gchains-{run.id}": "16",
                              f"rbm-gsteps-{run.id}": "1000"})
    assert not at.exception, at.exception
    assert "Capped: 16 chains x 1,000 steps" in _texts(at)
    assert done and sum(done) <= wb.CAPS.chain_flops
    frame = at.slider(key=f"rbm-gframe-{run.id}")
    assert frame.max <= 1000 and frame.value == frame.max


def test_a_crafted_langevin_link_meets_the_cap_and_the_langevin_work_stays_within_it(runs_dir, monkeypatch):
    from genlib.models.ebm import EBM

    monkeypatch.setattr(wb, "CAPS", wb.Caps(chain_flops=5e8))
    done = []
    real = EBM.langevin

    def counted(self, x0, steps, **kw):
        forward = wb.forward_flops(self.energy, torch.zeros(1, 1, 28, 28))
        done.append(wb.langevin_step_flops(forward) * x0.shape[0] * steps)
        return real(self, x0, steps, **kw)

    monkeypatch.setattr(EBM, "langevin", counted)
    run = _save_run(runs_dir, "ebm", {"channels": (16, 32, 64, 64)})
    at = _open("ebm", run, **{"ebm-tab": "Langevin chain"})
    at.select_slider(key=f"ebm-lchains-{run.id}").set_value(8).run()
    at.slider(key=f"ebm-lsteps-{run.id}").set_value(1000).run()
    assert not at.exception, at.exception
    assert "Capped: 8 chains x 1,000 steps" in _texts(at)
    assert done and max(done) <= wb.CAPS.chain_flops


def test_a_huge_rbm_sends_no_weights_to_the_browser_and_its_sliders_run_on_the_server(runs_dir, monkeypatch):
    import dashboard.explore.browser_decoder as bd

    sent = []
    monkeypatch.setattr(bd, "network_payload", lambda version, model: sent.append(version) or {})
    run = _save_run(runs_dir, "rbm", {"n_hidden": 4096})  # p(v|h) of 784 x 4,096: 17 MB of base64 per session
    at = _open("rbm", run, **{"rbm-tab": "Clamp hidden units"})
    assert not at.exception, at.exception
    assert sent == []
    assert "more than a browser session is sent" in _texts(at)
    assert at.slider(key=f"rbm-h0-{run.id}")  # the server-side sliders instead
    assert at.toggle(key="rbm-server").disabled


def test_the_ising_panel_samples_no_rbm_beyond_its_cap(runs_dir, monkeypatch):
    import dashboard.ising_view as view
    import genlib.ising.compare as compare

    calls = []
    monkeypatch.setattr(compare, "rbm_spins", lambda model, n, **kw: calls.append(n))
    torch.manual_seed(0)
    model = build_model("rbm", {"image_shape": (1, 64, 64), "n_hidden": 4096})
    path = runs_dir / "big.safetensors"
    save_checkpoint(path, model, train_config={"dataset": "ising:L=64"}, progress={"step": 0})
    out = view._rbm(str(path), path.stat().st_mtime_ns, 2.27)
    assert calls == [] and "too large to sample on the page" in out["note"]


def test_a_crafted_epoch_play_link_builds_an_animation_within_the_frame_cap(dashboard_env, monkeypatch):
    from PIL import Image

    from dashboard import state

    monkeypatch.setattr("genlib.jobs.worker.RunQuality", type("NoQuality", (), {
        "__init__": lambda self, *a, **k: None, "periodic": lambda self, *a, **k: {},
        "final": lambda self, *a, **k: {}}), raising=False)
    monkeypatch.setattr(wb, "CAPS", wb.Caps(gif_frames=12))
    mgr = state.get_manager()
    run_id = mgr.submit("vae", {"hidden": 32, "latent": 2}, {"dataset": "digits", "batch_size": 50, "lr": 1e-3,
                                                              "epochs": 1})
    assert mgr.wait(run_id, timeout=120).state == "finished"
    time.sleep(1.1)  # the shared statuses scan lives one second
    run = mgr.store.get(run_id)
    png = run.epoch_grids()[0].read_bytes()
    for epoch in range(2, 81):  # an old run folder with 80 epochs' grids
        (run.samples_dir / f"epoch-{epoch:04d}.png").write_bytes(png)
    gifs = []
    import dashboard.training as training

    real = training.epoch_gif

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        gifs.append(out[0])
        return out

    monkeypatch.setattr(training, "epoch_gif", spy)
    from conftest import APP

    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["run"] = run_id
    at.query_params[f"epoch-play-{run_id}"] = "true"
    at.switch_page("app_pages/vae.py")
    at.run()
    assert not at.exception, at.exception
    assert gifs
    frames = Image.open(io.BytesIO(gifs[-1])).n_frames
    assert frames <= 12
    assert "Showing 12 of the 80 frames" in _texts(at)


def test_a_huge_vae_sends_no_weights_to_the_browser_and_says_what_to_do(runs_dir, monkeypatch):
    import dashboard.explore.browser_decoder as bd

    sent = []
    monkeypatch.setattr(bd, "network_payload", lambda version, model: sent.append(version) or {})
    run = _save_run(runs_dir, "vae", {"hidden": 4096, "latent": 8})  # its decoder: 17.8 MB of base64 per session
    at = _open("vae", run, **{"vae-tab": "Latent sliders"})
    assert not at.exception, at.exception
    assert sent == []
    assert "Turn on 'Server-side sliders'" in _texts(at)


# ---- a tab's share over time (no cookie: the tab alone) ----

def test_a_session_meter_takes_a_burst_then_refills_at_its_rate():
    meter = wb.WorkMeter(budget=100.0, window_s=10.0)
    assert meter.charge(60, now=0.0) == 0 and meter.charge(40, now=0.0) == 0  # the burst
    assert meter.charge(50, now=0.0) == pytest.approx(5.0)  # 50 FLOPs drain in 5 s
    assert meter.charge(50, now=5.0) == 0  # and then they fit
    assert meter.charge(500, now=1000.0) == 0  # an empty meter takes any one (already capped) request


def test_a_tab_asking_for_new_chains_over_and_over_waits_and_computes_nothing(runs_dir, monkeypatch):
    import dashboard.explore.rbm as page

    monkeypatch.setattr(wb, "CAPS", wb.Caps(session_flops=2e8, session_window_s=600.0))
    done = []
    real = page.gibbs_chain
    monkeypatch.setattr(page, "gibbs_chain", lambda model, v0, steps, **kw: done.append(v0.shape[0] * steps)
                        or real(model, v0, steps, **kw))
    run = _save_run(runs_dir, "rbm", {"n_hidden": 64})  # 16 chains x 1,000 steps: 3.2 GFLOP, over the budget
    at = _open("rbm", run, **{"rbm-tab": "Gibbs chain", f"rbm-gchains-{run.id}": "16",
                              f"rbm-gsteps-{run.id}": "1000"})
    assert not at.exception, at.exception
    assert len(done) == 1  # the first one runs (an empty meter takes one request)
    at.number_input(key=f"rbm-gseed-{run.id}").set_value(7).run()  # a fresh seed: no cache can serve it
    assert not at.exception, at.exception
    assert len(done) == 1 and "its share of a class's server" in " ".join(str(w.value) for w in at.warning)
    at.number_input(key=f"rbm-gseed-{run.id}").set_value(0).run()  # the setting it saw before: at once
    assert not at.warning and at.slider(key=f"rbm-gframe-{run.id}")


# ---- a browser's share, and the server's, over time (every tab of a browser together) ----

def _meters(**caps):
    return wb.SharedMeters(wb.Caps(**{"session_flops": 100.0, "session_window_s": 10.0, "server_flops": 1e9,
                                      "server_window_s": 10.0, **caps}))


def test_two_tabs_of_one_browser_draw_from_one_bucket_and_two_browsers_do_not():
    meters = _meters()
    assert meters.charge(("browser", "a"), "setting 1", 60.0, now=0.0) is None  # tab 1
    assert meters.charge(("browser", "a"), "setting 2", 40.0, now=0.0) is None  # tab 2: the rest of the burst
    refused = meters.charge(("browser", "a"), "setting 3", 50.0, now=0.0)  # either tab: spent
    assert refused == wb.Refusal(scope="browser", wait_s=pytest.approx(5.0), level=100.0)
    assert meters.charge(("browser", "a"), "setting 1", 60.0, now=0.0) is None  # paid for before: free
    assert meters.charge(("browser", "b"), "setting 3", 50.0, now=0.0) is None  # another browser: its own
    assert meters.charge(("browser", "a"), "setting 3", 50.0, now=5.0) is None  # drained: fits


def test_the_server_bucket_caps_many_browsers_together_and_charges_nothing_it_refuses():
    meters = _meters(server_flops=250.0)
    assert [meters.charge(("browser", b), "s", 100.0, now=0.0) for b in "ab"] == [None, None]
    refused = meters.charge(("browser", "c"), "s", 100.0, now=0.0)  # a fresh browser, a full server
    assert refused == wb.Refusal(scope="server", wait_s=pytest.approx(2.0), level=200.0)
    assert meters.charge(("browser", "c"), "t", 50.0, now=0.0) is None  # its own budget was not charged
    assert meters.server.level_at(0.0) == 250.0


def test_the_default_server_bucket_is_ten_browsers_and_a_class_at_default_settings_never_meets_it():
    caps = wb.Caps()
    assert caps.server_flops / caps.server_window_s == 10 * caps.session_flops / caps.session_window_s
    meters, now = wb.SharedMeters(caps), 0.0
    setting = wb.gibbs_step_flops(784, 512) * 4 * 200  # the RBM explorer's default: 4 chains x 200 steps
    for minute in range(15):  # 30 students, each trying 2 new settings a minute
        for student in range(30):
            for k in range(2):
                assert meters.charge(("browser", student), (minute, k), setting, now=now) is None
        now += 60.0


def test_the_meters_stay_bounded_however_many_browsers_and_settings_arrive():
    meters = _meters(meter_browsers=50, meter_settings=8, session_flops=1e9)
    for b in range(1000):
        meters.charge(("browser", b), "s", 1.0, now=0.0)
    assert len(meters) == 50  # the least recently active forgotten
    for k in range(100):
        meters.charge(("browser", 999), ("setting", k), 1.0, now=0.0)
    assert meters.charge(("browser", 999), ("setting", 0), 1e9, now=0.0) is not None  # forgotten: priced again
    assert meters.charge(("browser", 999), ("setting", 99), 1e9, now=0.0) is None  # remembered: free


def test_threads_charging_at_once_never_overdraw_a_bucket():
    import threading

    meters, taken = _meters(session_flops=1e9, server_flops=100.0, server_window_s=1e9), []
    start = threading.Barrier(8)

    def student(b):
        start.wait()
        taken.extend(k for k in range(50) if meters.charge(("browser", b), k, 1.0, now=1.0) is None)

    threads = [threading.Thread(target=student, args=(b,)) for b in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(taken) == 100


def test_the_meter_key_is_the_browsers_cookie_token_not_its_masked_text_or_the_tab():
    from streamlit.web.server.starlette.starlette_app_utils import generate_xsrf_token_string

    from dashboard.work_meter import meter_key

    token = os.urandom(16)
    tab1 = {"_streamlit_xsrf": generate_xsrf_token_string(token)}  # each response masks the token afresh
    tab2 = {"_streamlit_xsrf": generate_xsrf_token_string(token)}
    assert tab1 != tab2 and meter_key(tab1, "tab-1") == meter_key(tab2, "tab-2") != meter_key(
        {"_streamlit_xsrf": generate_xsrf_token_string(os.urandom(16))}, "tab-1")
    assert meter_key(tab1, "tab-1")[0] == "browser" and token.hex() not in str(meter_key(tab1, "tab-1"))
    assert meter_key({}, "tab-1") == ("tab", "tab-1") != meter_key({}, "tab-2")  # no cookie: the tab alone
    assert meter_key({"_streamlit_xsrf": "garbage"}, "tab-1") == ("tab", "tab-1")


@pytest.fixture
def browser_cookie(monkeypatch):
    """Set the cookies the next page run's browser sends (AppTest cannot: st.context.cookies reads the session's
    client, which AppTest has none of, so its one reader in Streamlit is replaced)."""
    from types import SimpleNamespace

    import streamlit.runtime.context as context
    from streamlit.web.server.starlette.starlette_app_utils import generate_xsrf_token_string

    sent: dict = {}
    monkeypatch.setattr(context, "_get_client_context", lambda: SimpleNamespace(cookies=dict(sent), headers={}))

    def use(token: bytes) -> None:  # a tab of the browser holding `token` (masked afresh, as the server sends it)
        sent.clear()
        sent["_streamlit_xsrf"] = generate_xsrf_token_string(token)
    return use


def _gibbs_counter(monkeypatch):
    import dashboard.explore.rbm as page

    done = []
    real = page.gibbs_chain
    monkeypatch.setattr(page, "gibbs_chain", lambda model, v0, steps, **kw: done.append(v0.shape[0] * steps)
                        or real(model, v0, steps, **kw))
    return done


def _open_chain(run, seed):
    return _open("rbm", run, **{"rbm-tab": "Gibbs chain", f"rbm-gchains-{run.id}": "16",
                                f"rbm-gsteps-{run.id}": "1000", f"rbm-gseed-{run.id}": str(seed)})


def _warnings(at) -> str:
    return " ".join(str(w.value) for w in at.warning)


def test_a_second_tab_of_the_same_browser_is_refused_after_the_first_used_the_budget(runs_dir, monkeypatch,
                                                                                      browser_cookie):
    monkeypatch.setattr(wb, "CAPS", wb.Caps(session_flops=2e8, session_window_s=600.0))
    done = _gibbs_counter(monkeypatch)
    run = _save_run(runs_dir, "rbm", {"n_hidden": 64})  # 16 chains x 1,000 steps: 3.2 GFLOP, over the budget
    mine, other = os.urandom(16), os.urandom(16)
    browser_cookie(mine)
    first = _open_chain(run, seed=0)  # tab 1 spends this browser's budget
    assert not first.exception, first.exception
    assert len(done) == 1 and not first.warning
    browser_cookie(mine)
    second = _open_chain(run, seed=7)  # tab 2 of the same browser, a new setting
    assert not second.exception, second.exception
    assert len(done) == 1, "the second tab got a budget of its own"
    assert "This browser (all its tabs together)" in _warnings(second)
    assert "its share of a class's server" in _warnings(second)
    browser_cookie(mine)
    again = _open_chain(run, seed=0)  # the setting tab 1 computed: free in any tab of that browser
    assert not again.warning and len(done) == 1
    browser_cookie(other)
    elsewhere = _open_chain(run, seed=7)  # another student's browser: its own budget
    assert not elsewhere.warning and len(done) == 2


def test_many_browsers_meet_the_servers_cap_and_the_page_says_it_is_the_servers(runs_dir, monkeypatch,
                                                                                browser_cookie):
    monkeypatch.setattr(wb, "CAPS", wb.Caps(session_flops=1e12, server_flops=2e8, server_window_s=600.0))
    done = _gibbs_counter(monkeypatch)
    run = _save_run(runs_dir, "rbm", {"n_hidden": 64})
    browser_cookie(os.urandom(16))
    assert not _open_chain(run, seed=0).warning and len(done) == 1  # an empty server takes one request
    browser_cookie(os.urandom(16))  # a fresh browser (or cleared cookies): a full budget of its own, not the server
    at = _open_chain(run, seed=7)
    assert not at.exception, at.exception
    assert len(done) == 1
    assert "The server's explorer work is fully used for the next" in _warnings(at)
    assert "This browser" not in _warnings(at)


def test_a_live_runs_animation_is_rebuilt_when_a_tenth_more_epochs_landed_not_at_each():
    builds = set()
    for n in range(2, 501):  # a live run saving epochs 1..n, one at a time
        shown = wb.animated_epochs(range(1, n + 1), live=True)
        assert shown[0] == 1 and n - shown[-1] <= max(1, n // 10)  # within the newest tenth
        builds.add(tuple(shown))
    assert len(builds) <= 100  # against 499 rebuilds, one per epoch, before
    assert wb.animated_epochs(range(1, 501), live=False)[-1] == 500  # a stopped run: every epoch


def test_counting_flops_never_hooks_another_threads_gradients():
    """A FLOP count (an explorer's budget check) while another session's thread runs a Langevin chain's
    torch.autograd.grad: with PyTorch's FlopCounterMode, whose module hooks are process-wide, that thread failed
    ("A leaf node was passed to _will_engine_execute_node"); the count must stay this thread's, and equal PyTorch's."""
    import threading

    import torch
    from torch import nn
    from torch.utils.flop_counter import FlopCounterMode

    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 26 * 26, 1))
    errors: list[str] = []

    def other_session() -> None:
        x = torch.randn(2, 1, 28, 28, requires_grad=True)
        try:
            torch.autograd.grad(net(x).sum(), x)
        except RuntimeError as e:
            errors.append(str(e))

    def energy_while_another_session_samples(x: torch.Tensor) -> torch.Tensor:
        t = threading.Thread(target=other_session)
        t.start()
        t.join()
        return net(x)

    example = torch.zeros(1, 1, 28, 28)
    flops = wb.forward_flops(energy_while_another_session_samples, example)
    assert errors == []
    with torch.no_grad(), FlopCounterMode(display=False) as reference:
        net(example)
    assert flops == reference.get_total_flops() > 0
