"""Fixtures shared by the whole suite."""
import pytest
from hydra.core.hydra_config import HydraConfig

from tests.strict_cupy.fixture import strict_cupy  # noqa: F401 - the CPU stand-in for CuPy


@pytest.fixture(autouse=True)
def _no_hydra_job_left_set():
    """Clear the Hydra job config after every test. A test that runs the CLI in this process
    (``cli.main()``, the run-directory guard) leaves ``HydraConfig`` set; a later test that
    composes its own config would read that job's overrides (``task=eval`` takes the command
    line's ``data.*`` from it), so its result would depend on the test order."""
    yield
    HydraConfig.instance().cfg = None
