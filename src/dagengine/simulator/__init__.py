"""A local simulator of the Anthropic, OpenAI and Gemini APIs, for tests, demos and benchmarks.

    async with Simulator(latency=0.01, requests_per_minute=600, seed=1) as sim:
        client = anthropic.AsyncAnthropic(base_url=sim.base_url, api_key="sim")

`SimulatorProcess` runs the same server in a child process; `python -m dagengine.simulator`
serves it from the command line. Everything it returns is labelled as simulated.
"""

from ._answers import prompt_key
from ._base import BaseSimulator
from ._cli import main
from ._config import ScriptStep, SimulatorConfig
from ._keys import key_fingerprint
from ._process import SimulatorProcess
from ._server import Simulator

__all__ = [
    "BaseSimulator",
    "ScriptStep",
    "Simulator",
    "SimulatorConfig",
    "SimulatorProcess",
    "key_fingerprint",
    "main",
    "prompt_key",
]
