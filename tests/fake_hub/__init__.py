"""A local stand-in for the Hugging Face Hub endpoints used to publish (see server.py)."""
