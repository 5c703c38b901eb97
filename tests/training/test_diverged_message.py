""""training diverged" names the files of the completed epochs only where they exist."""
from __future__ import annotations

import pytest

from convtrain.training.trainer import TrainingDiverged
from tests.training.test_trainer import TwoPhase, blobs, make_trainer

pytestmark = pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning",
                                        "ignore:invalid:RuntimeWarning")


def diverge(run_dir, data, **kw):
    with pytest.raises(TrainingDiverged, match="epoch 2") as info:
        make_trainer(run_dir, data, sched=TwoPhase(), max_epochs=3, **kw).fit()
    return str(info.value)


def test_a_resumed_run_points_at_its_checkpoint_not_at_its_empty_run_dir(tmp_path):
    data = blobs()
    make_trainer(tmp_path / "first", data, sched=TwoPhase(), max_epochs=1).fit()
    message = diverge(tmp_path / "resumed", data, resume=str(tmp_path / "first"))
    assert "kept in " + str(tmp_path / "resumed") not in message, message
    assert message.endswith(f"; epochs 1-1 are kept in the resumed checkpoint "
                            f"{tmp_path / 'first'}."), message
    assert not (tmp_path / "resumed" / "metrics.json").exists()


def test_a_run_with_its_own_files_names_them(tmp_path):
    with pytest.raises(TrainingDiverged, match="epoch 2") as info:
        make_trainer(tmp_path, blobs(), sched=TwoPhase(), max_epochs=3).fit()
    assert str(info.value).endswith(f"; checkpoints and metrics.json of the completed epochs "
                                    f"1-1 are kept in {tmp_path}."), info.value
