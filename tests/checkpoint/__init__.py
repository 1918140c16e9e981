"""Tests of albef.checkpoint: reading/saving, layouts, strict loading, conversions, initialisation."""
