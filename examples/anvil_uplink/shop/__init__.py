# An Anvil app package as Anvil's git clone lays it out: its server and client code are
# its two import paths (anvil.run_app_via_uplink checks exactly this).
import os as _os

__path__ = [
    _os.path.join(_os.path.dirname(__file__), "server_code"),
    _os.path.join(_os.path.dirname(__file__), "client_code"),
]
