module volley/servers/go-blocking

go 1.22
