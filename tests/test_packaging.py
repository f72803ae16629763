"""The installed package carries what the CLI needs: `entspec demo` reads its config from package data."""

import subprocess
import sys
import zipfile

from entspec.experiment import ExperimentConfig
from entspec.experiment.cli import DEMO_CONFIG


def test_demo_config_is_package_data_and_valid(tmp_path):
    assert DEMO_CONFIG.is_file()
    ExperimentConfig.from_yaml(DEMO_CONFIG)
    root = DEMO_CONFIG.parents[3]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(root)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("entspec-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "entspec/experiment/quick.yaml" in names and "entspec/replay/engine.py" in names
