"""Price alerts (issue 14): rules, their store, the engine that evaluates them."""
