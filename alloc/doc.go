// Package alloc chooses the compressed ranks of every layer and side (keys,
// values) under a cache-memory budget (docs/METHOD.md §7).
//
// It holds the three pure pieces of the allocation, none of which touches a
// model:
//
//   - the closed-form error curve of one side (TailCurve): with X the
//     layer's calibration inputs and W the projection, the smallest
//     ‖X·Wᵀ − X·Aᵀ·Bᵀ‖² over rank-r factors is the sum of the eigenvalues of
//     W·XᵀX·Wᵀ beyond the r-th, so one eigendecomposition gives every rank;
//   - the byte cost of a side at a rank (SideBytes), from kvcache.Bytes, and
//     the budget in the same units (BudgetBytes);
//   - the multiple-choice knapsack (Solve) that picks one rank per layer and
//     side minimising the summed error within the budget, and the plan file
//     (Plan) that records the choice with the curves behind it.
//
// train.Allocate measures the curves on a model (and refines them with the
// output-term error on held-out sequences); train.Run takes the plan.
package alloc
