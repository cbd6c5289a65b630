package graph

import (
	"fmt"
	"reflect"
	"testing"
)

func TestZZProg(t *testing.T) {
	s := tinySpec(lossCases[4], 1)
	l, _ := NewLayer(s, RandomFactors(s, 2))
	p := reflect.ValueOf(l.c32.vm).MethodByName("Prog").Call(nil)[0].Interface().(fmt.Stringer)
	fmt.Println(p.String())
}
