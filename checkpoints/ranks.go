package checkpoints

// Ranks returns the key and value ranks of every layer, in layer order.
func (p *Projections) Ranks() (k, v []int) {
	for _, f := range p.Layers {
		k = append(k, f.KRank)
		v = append(v, f.VRank)
	}
	return k, v
}

// Uniform reports whether every layer has layer 0's ranks.
func (p *Projections) Uniform() bool {
	for _, f := range p.Layers {
		if f.KRank != p.Layers[0].KRank || f.VRank != p.Layers[0].VRank {
			return false
		}
	}
	return true
}
