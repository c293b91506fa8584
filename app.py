"""Serve the promoted agent: `python app.py` (host and port from settings.ini, e.g. AGENT_LOOP_APP_PORT=8000)."""
import sys
from agent_loop.app import launch
from agent_loop.config import ConfigError
from agent_loop.registry import ModelFileError
from agent_loop.tools import ToolsetError

if __name__ == "__main__":
    try: launch()
    except (ModelFileError, ConfigError, ToolsetError) as e:
        sys.exit(f"agent-loop: {e}")
