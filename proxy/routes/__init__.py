"""proxy/routes"""
