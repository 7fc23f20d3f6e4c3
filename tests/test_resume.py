"""One rule for what a resumed run trains to (genlib.runs.resume): the CLI (`train --resume`), JobManager.resume and
the dashboard's "Continue training" all go through it, so the same request gives the same run.json."""

from __future__ import annotations

import shutil

import pytest

from genlib.runs.resume import epochs_added, resumed_train_config

pytestmark = pytest.mark.usefixtures("no_quality_evaluation")

BASE = {"dataset": "digits", "epochs": 2, "max_steps": 20, "batch_size": 50, "log_every": 2, "device": "cpu",
        "n_samples": 4}


def test_the_rule():
    tc = resumed_train_config(BASE)
    assert (tc["epochs"], tc["max_steps"]) == (2, 20)  # nothing asked: the planned end
    tc = resumed_train_config(BASE, epochs=5)
    assert (tc["epochs"], tc["max_steps"]) == (5, None)  # a new total of epochs: the old cap would end it at once
    tc = resumed_train_config(BASE, max_steps=40)
    assert (tc["epochs"], tc["max_steps"]) == (2, 40)
    tc = resumed_train_config(BASE, epochs=5, max_steps=40)
    assert (tc["epochs"], tc["max_steps"]) == (5, 40)
    with pytest.raises(ValueError, match="epochs"):
        resumed_train_config(BASE, epochs=0)
    # "one more epoch" beyond the planned end: the cap moves by an epoch of steps from the planned end, not from
    # where the run happened to stop
    assert epochs_added(BASE, 1, step=10, epoch=0, steps_per_epoch=30) == (3, 50)
    assert epochs_added(BASE, 2, step=25, epoch=0, steps_per_epoch=30) == (4, 85)
    assert epochs_added({"epochs": 2}, 1, step=60, epoch=2, steps_per_epoch=30) == (3, None)
    assert epochs_added(BASE, 0, step=10, epoch=0, steps_per_epoch=30) == (None, None)


@pytest.fixture
def stopped_copies(manager):
    """Five copies of one VAE run stopped at step 10 of its planned 20 (2 epochs of 30 steps, capped at 20)."""
    from genlib.runs.store import Run

    run_id = manager.submit("vae", {"hidden": 16, "latent": 2}, {**BASE, "max_steps": 10})
    assert manager.wait(run_id, timeout=120).state == "finished"
    original = manager.store.get(run_id)
    original.write_info(original.record().with_train_config({**original.record().train_config, "max_steps": 20}))
    original.write_state(state="stopped", message="stopped by its teacher")
    copies = []
    for name in ("cli", "manager", "page", "cli-epochs", "manager-epochs"):
        target = manager.store.root / f"vae-copy-{name}"
        shutil.copytree(original.path, target)
        copies.append(Run(target))
    return original.record().train_config, copies


def test_the_cli_the_job_manager_and_the_dashboard_resume_alike(manager, stopped_copies, capsys):
    from streamlit.testing.v1 import AppTest

    from conftest import APP
    from genlib import cli

    tc, (by_cli, by_manager, by_page, by_cli_epochs, by_manager_epochs) = stopped_copies
    # one more epoch beyond the planned end, as the page's "Epochs to add: 1" asks for it
    epochs, max_steps = epochs_added(tc, 1, step=10, epoch=0, steps_per_epoch=30)
    expected = resumed_train_config(tc, epochs=epochs, max_steps=max_steps)
    assert (expected["epochs"], expected["max_steps"]) == (3, 50)

    assert cli.main(["train", "--resume", str(by_cli.path), "--epochs", str(epochs), "--max-steps", str(max_steps),
                     "--quiet", "--evaluate", "none"]) == 0, capsys.readouterr().err
    manager.resume(by_manager.id, epochs=epochs, max_steps=max_steps)
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["run"] = by_page.id
    at.switch_page("app_pages/vae.py").run()
    assert not at.exception, at.exception
    at.number_input(key=f"continue-epochs-{by_page.id}").set_value(1)
    at.button(key=f"continue-submit-{by_page.id}").click().run()
    assert not at.exception, at.exception
    for run in (by_cli, by_manager, by_page):
        assert run.record().train_config == expected, run.id

    # a new total of epochs alone: the same on the command line and through the server
    assert cli.main(["train", "--resume", str(by_cli_epochs.path), "--epochs", "3", "--quiet",
                     "--evaluate", "none"]) == 0, capsys.readouterr().err
    manager.resume(by_manager_epochs.id, epochs=3)
    for run in (by_cli_epochs, by_manager_epochs):
        assert run.record().train_config == resumed_train_config(tc, epochs=3), run.id
    for run in (by_manager, by_page, by_manager_epochs):
        assert manager.wait(run.id, timeout=180).state == "finished"
    assert by_cli.state()["step"] == 50 and by_manager.state()["step"] == 50 and by_page.state()["step"] == 50
    assert by_cli_epochs.state()["step"] == by_manager_epochs.state()["step"] == 90
