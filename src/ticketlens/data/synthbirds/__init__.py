"""Synthetic birds with known answers in the CUB_200_2011 layout (docs/synthbirds.md): `classes` (parts,
attribute groups, class definitions), `drawing` (sampling and drawing one bird), `folder` (the generated
folder and its manifest), `prepare` (data.pt through the CUB reader of `ticketlens.data.birds`)."""
