package record

// activeFiles returns the paths of the files being written.
func (r *Recorder) activeFiles() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for p := range r.active {
		out = append(out, p)
	}
	return out
}

// breakFiles closes the descriptors of the files being written under their
// writers, so that the next write fails as it would on a vanished disk.
func (r *Recorder) breakFiles() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, fh := range r.active {
		_ = fh.f.Close()
	}
}
