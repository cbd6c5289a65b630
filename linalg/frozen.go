package linalg

// Freeze declares that s will not change until Thaw(s) (or the next
// Freeze(s), which discards what was derived from its old contents): bf16
// products whose operands lie inside s round them to bf16 once per view and
// reuse the result, instead of on every call. Frozen weights and a step's
// input are read by several products per step, a head's keys by every
// attention tile. Thaw must follow, once every product reading s has
// returned; until it does, s and its roundings stay in memory.
func Freeze(s []float32) {
	if hasDNNL {
		freeze(s)
	}
}

// Thaw ends Freeze(s).
func Thaw(s []float32) {
	if hasDNNL {
		thaw(s)
	}
}
