package main

import (
	"context"
	"errors"
	"flag"
)

func cmdBench(ctx context.Context, e env, v *values, fs *flag.FlagSet) error {
	return errors.New("todo")
}
func benchFlags(fs *flag.FlagSet) {}
