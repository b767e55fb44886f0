"""Twins: per-asset adapters that give raw points their OpenFMB meaning and hold live state."""
