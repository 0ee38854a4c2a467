"""An Anvil server module, unchanged: run on this machine against Tether with

    ANVIL_UPLINK_URL=ws://127.0.0.1:8000/_/uplink ANVIL_UPLINK_KEY=dev-key \\
        python -m anvil.run_app_via_uplink shop
"""

import anvil.server

PRICES = {"teapot": 1999, "kettle": 4550}


@anvil.server.callable
def shop_price(item):
    return PRICES[item]


@anvil.server.callable("shop.basket_total")
def basket_total(items):
    return sum(PRICES[item] for item in items)
