"""Pure logic: values in, values out. Nothing here touches the database or the network."""
