"""lguest_host: the lguest Host, modelled on Linux drivers/lguest."""
