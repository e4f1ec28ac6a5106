"""HTTP routes: each validates, calls one engine method and shapes the answer."""
