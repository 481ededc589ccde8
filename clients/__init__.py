"""Client libraries for the Orders services."""
