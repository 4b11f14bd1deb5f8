"""Alerts for lot managers: raised and cleared as each lot is recounted."""
