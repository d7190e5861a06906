"""Networks (plain nn.Modules), steppers (state and device) and checkpoints."""
