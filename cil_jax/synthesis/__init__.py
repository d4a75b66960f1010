"""Old-class inputs synthesised from a teacher, without its data:
model inversion (DeepInversion), a generator trained against the teacher,
and a grid image of what was made."""
