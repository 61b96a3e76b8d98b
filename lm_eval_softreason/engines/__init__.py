"""Engines decode rows for the strategies; a strategy never knows which engine (see ``base.py``)."""
