"""Inference backends behind one Engine protocol (engines/base.py)."""
