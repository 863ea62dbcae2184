package pipeline

// APIRoute is a route of the API listener, as the OpenAPI document's test
// sees it.
type APIRoute struct {
	Method, Doc string
	Guard       bool
}

// APIRoutes lists the API listener's routes (apiRoutes).
func APIRoutes() []APIRoute {
	var out []APIRoute
	for _, r := range apiRoutes() {
		out = append(out, APIRoute{Method: r.Method, Doc: r.Doc, Guard: r.Guard})
	}
	return out
}
