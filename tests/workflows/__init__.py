"""Tests of ``albef.workflows``."""
