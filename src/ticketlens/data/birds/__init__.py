"""The CUB-200-2011 layout, shared by CUB and the synthetic birds: `records` (text files), `images`
(decode, check, crop), `prepare` (data.pt and meta.csv), `check` (`ticketlens data check`)."""
