"""trio glue: nurseries, channels, cancel scopes; carries out what core decides."""
