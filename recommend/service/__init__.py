"""The recall service's own modules; recommend/main.py only assembles them."""
