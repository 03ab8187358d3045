import pytest

from tests.plant import Fleet


@pytest.fixture(scope="session")
def ray_local():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield ray
    ray.shutdown()


@pytest.fixture()
def fleet(tmp_path):
    return Fleet(tmp_path)
