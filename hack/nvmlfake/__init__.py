"""nvmlfake: an NVML fake at the C ABI, loaded by the real nvidia-ml-py.

    from gdp_hack.nvmlfake import FakeDriver, build, load
    driver = FakeDriver(tmp_path / "root", "dgx-a100")   # builds (cached), lays out a driver root
    env = driver.env()                                    # LD_LIBRARY_PATH + FAKE_NVML_STATE
    driver.inject_xid(3, 79); driver.lose(5); driver.heal()

See README.md beside this file for the profile format, the state file and the faults.
"""

from gdp_hack.nvmlfake.build import LIBRARY, BuildError, build
from gdp_hack.nvmlfake.driver import LIB_DIR, STATE_NAME, FakeDriver, ci_cap_minor, gi_cap_minor
from gdp_hack.nvmlfake.profile import MigInstance, Profile, ProfileError, load, shipped_names

__all__ = [
    "LIBRARY",
    "LIB_DIR",
    "STATE_NAME",
    "BuildError",
    "FakeDriver",
    "MigInstance",
    "Profile",
    "ProfileError",
    "build",
    "ci_cap_minor",
    "gi_cap_minor",
    "load",
    "shipped_names",
]
