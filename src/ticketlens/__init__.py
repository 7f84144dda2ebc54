"""ticketlens: find lottery tickets, explain them, and measure how far their explanations drift."""

__version__ = "0.1.0"
