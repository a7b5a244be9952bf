"""Token-level collaboration: several models writing one answer together (R2R, FusionRoute, Arbitrage)."""
