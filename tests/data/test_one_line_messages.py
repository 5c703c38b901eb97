"""A dataset the user has not got is one line on the command line (exit 2), naming the files,
where they were looked for and the three ways to provide them."""
from __future__ import annotations

from tests.app.test_cli_errors import convtrain  # noqa: F401 - the fixture


def test_missing_mnist_directory_is_one_line(convtrain, capsys, tmp_path):
    root = tmp_path / "no-mnist"
    code = convtrain("data=mnist", f"data.root={root}", "data.download=false",
                     "trainer.max_epochs=1", f"hydra.run.dir={tmp_path / 'run'}")
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == [
        "convtrain: error: mnist: missing dataset file(s) train-images-idx3-ubyte.gz, "
        "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz "
        f"(searched {root}); add data.download=true to download them into {root}, point "
        "data.root=DIR at a directory that holds them, or set $CONVTRAIN_DATA to a parent "
        "directory containing 'mnist/'"], err


def test_a_data_root_that_is_a_file_is_called_one(convtrain, capsys, tmp_path):
    root = tmp_path / "mnist.tar"
    root.write_bytes(b"not a directory")
    code = convtrain("data=mnist", f"data.root={root}", "data.download=false",
                     "trainer.max_epochs=1", f"hydra.run.dir={tmp_path / 'run'}")
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert f"(searched {root} (a file, not a directory)); " in err, err
