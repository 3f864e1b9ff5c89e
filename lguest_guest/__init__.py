"""lguest_guest: the lguest Guest paravirt ops and a small kernel."""
