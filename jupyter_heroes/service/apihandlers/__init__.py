"""service/apihandlers."""
