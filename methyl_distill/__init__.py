"""methyl-distill: DNA-methylation marker papers -> a domain-expert language model."""

__version__ = "0.1.0"
