"""The x86-specific half of the Host, after drivers/lguest/x86/."""
