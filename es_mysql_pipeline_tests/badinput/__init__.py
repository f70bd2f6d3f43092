"""Bad input and bad configuration: every record accounted for, every failure explained."""
