"""Fine-tuning, inference, serving and evaluation of the student model with ms-swift.

Modules import torch and ms-swift inside their functions, so importing this package stays cheap.
"""
